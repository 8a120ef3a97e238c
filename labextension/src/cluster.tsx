/**
 * The cluster strip below the header: workers (and the autoscaling bounds), GPUs busy and
 * idle, the queue by priority, GPU time left idle, the user's quota and the Dask dashboard;
 * the latest autoscaling decision; and, disclosed on demand, each worker's utilisation and
 * the latest cluster events.
 */
import * as React from 'react';

import {
  IDLE_GPU_TITLE,
  autoscalingText,
  clusterTitle,
  gpuUsageText,
  hostUsageText,
  minutesText,
  pendingTarget,
  queueByPriorityText,
  recentEvents,
  relativeTime,
  usageTitle,
  workerHoldingsText
} from './clustertext';
import { EverySecond, useSignal } from './controls';
import { formatTime } from './format';
import { TrainorchModel } from './model';
import { ICluster, IMe, IWorker, hasQuota } from './types';

/** Cluster events listed in the details. */
const EVENTS_SHOWN = 5;

/** Workers, GPUs and the queue; while the service does not answer, says so instead. */
export function ClusterStrip(props: { model: TrainorchModel }): JSX.Element {
  const { model } = props;
  useSignal(model.cluster.changed);
  useSignal(model.meChanged);
  useSignal(model.client.availabilityChanged);
  const [open, setOpen] = React.useState(false);
  React.useEffect(() => model.cluster.setDetailed(open), [model, open]);
  React.useEffect(() => () => model.cluster.setDetailed(false), [model]);
  const cluster = model.cluster.cluster;
  if (model.client.unavailable !== null) {
    return (
      <div
        className="trainorch-cluster trainorch-cluster-empty"
        data-field="cluster-unavailable"
        title={model.client.unavailable}
      >
        Cluster: unknown while the service does not answer
      </div>
    );
  }
  if (!cluster) {
    return <div className="trainorch-cluster trainorch-cluster-empty">Cluster: not known yet</div>;
  }
  const now = (): number => model.changes.serverNow();
  const toggle = (): void => setOpen(!open);
  return (
    <div className="trainorch-cluster">
      <div className="trainorch-cluster-items" title={clusterTitle(cluster)}>
        <button
          className="trainorch-cluster-toggle"
          aria-expanded={open}
          aria-label="Workers and cluster events"
          title={open ? 'Hide the workers and cluster events' : 'Workers and cluster events'}
          data-action="cluster-details"
          onClick={toggle}
        >
          {open ? '▾' : '▸'}
        </button>
        <WorkersItem cluster={cluster} />
        <span
          className="trainorch-cluster-item"
          data-field="gpus"
          title={`${cluster.gpus.total} GPUs in all`}
        >
          GPUs <b>{cluster.gpus.busy}</b> busy · <b>{cluster.gpus.idle}</b> idle
        </span>
        <QueueItem cluster={cluster} />
        {cluster.idle_gpu_minutes > 0 && (
          <span
            className="trainorch-cluster-item"
            data-field="idle-gpu-minutes"
            title={IDLE_GPU_TITLE}
          >
            idle <b>{minutesText(cluster.idle_gpu_minutes)}</b> GPU-min
          </span>
        )}
        {model.me && hasQuota(model.me) && <QuotaItem me={model.me} />}
        {cluster.waiting_on_dependencies > 0 && (
          <span className="trainorch-cluster-item" data-field="waiting">
            waiting <b>{cluster.waiting_on_dependencies}</b>
          </span>
        )}
        {cluster.dashboard && (
          <a
            className="trainorch-cluster-item trainorch-link"
            href={model.client.dashboardUrl}
            title={`Through this server when it can (the scheduler says ${cluster.dashboard})`}
            target="_blank"
            rel="noopener noreferrer"
            data-field="dashboard"
          >
            Dask dashboard
          </a>
        )}
      </div>
      {open ? (
        <ClusterDetails cluster={cluster} now={now} />
      ) : (
        <LatestEvent cluster={cluster} now={now} onClick={toggle} />
      )}
    </div>
  );
}

/** `3 workers → 4 (autoscaling 1–4)`: the pool now, what it is asked to be, its bounds. */
function WorkersItem(props: { cluster: ICluster }): JSX.Element {
  const { cluster } = props;
  const count = cluster.workers.length;
  const target = pendingTarget(cluster);
  const scaling = autoscalingText(cluster);
  return (
    <span className="trainorch-cluster-item" data-field="workers">
      <b>{count}</b> {count === 1 ? 'worker' : 'workers'}
      {target !== null && (
        <span title={`The pool is being resized to ${target} workers`}> → {target}</span>
      )}
      {scaling && <span data-field="autoscaling"> ({scaling})</span>}
    </span>
  );
}

/** `queue 3 urgent · 5 normal`, or `queue 0`. */
function QueueItem(props: { cluster: ICluster }): JSX.Element {
  const { cluster } = props;
  const byPriority = queueByPriorityText(cluster);
  const depth = cluster.queue_depth;
  return (
    <span
      className="trainorch-cluster-item"
      data-field="queue"
      title={`${depth} ${depth === 1 ? 'job waits' : 'jobs wait'} for resources${
        byPriority ? ` (${byPriority})` : ''
      }`}
    >
      queue {byPriority ? byPriority : <b>{depth}</b>}
    </span>
  );
}

/** The latest autoscaling decision, in the autoscaler's words. */
function LatestEvent(props: {
  cluster: ICluster;
  now: () => number;
  onClick: () => void;
}): JSX.Element | null {
  const [latest] = recentEvents(props.cluster, 1);
  if (!latest) {
    return null;
  }
  return (
    <div
      className="trainorch-cluster-event"
      data-field="scaling-event"
      title={
        `${latest.message}\nThe latest autoscaling decision, at ${formatTime(latest.time)} ` +
        `(asks for ${latest.target} workers): click for the workers and the cluster events`
      }
      onClick={props.onClick}
    >
      {latest.message}
      <span className="trainorch-cluster-when">
        {' · '}
        <EverySecond active>{() => relativeTime(latest.time, props.now())}</EverySecond>
      </span>
    </div>
  );
}

/** Each worker's holdings and utilisation, and the latest cluster events, newest first. */
function ClusterDetails(props: { cluster: ICluster; now: () => number }): JSX.Element {
  const { cluster } = props;
  const events = recentEvents(cluster, EVENTS_SHOWN);
  return (
    <div className="trainorch-cluster-details" data-field="cluster-details">
      <div className="trainorch-cluster-heading">Workers</div>
      {cluster.workers.length ? (
        <ul className="trainorch-workers">
          {cluster.workers.map(worker => (
            <WorkerRow key={worker.address} worker={worker} />
          ))}
        </ul>
      ) : (
        <div className="trainorch-cluster-none">No worker is connected.</div>
      )}
      {cluster.autoscaling && (
        <>
          <div className="trainorch-cluster-heading">Cluster events</div>
          {events.length ? (
            <ul className="trainorch-cluster-events" data-field="cluster-events">
              <EverySecond active>
                {() =>
                  events.map(event => (
                    <li key={`${event.time} ${event.message}`} title={formatTime(event.time)}>
                      <span className="trainorch-cluster-when">
                        {relativeTime(event.time, props.now())}
                      </span>{' '}
                      {event.message}
                    </li>
                  ))
                }
              </EverySecond>
            </ul>
          ) : (
            <div className="trainorch-cluster-none">No scaling decision yet.</div>
          )}
        </>
      )}
    </div>
  );
}

function WorkerRow(props: { worker: IWorker }): JSX.Element {
  const { worker } = props;
  const host = hostUsageText(worker);
  return (
    <li className="trainorch-worker" data-worker={worker.address}>
      <div>
        <span className="trainorch-worker-name" title={worker.address}>
          {worker.name || worker.address}
        </span>{' '}
        {workerHoldingsText(worker)}
      </div>
      {host && (
        <div
          className="trainorch-worker-usage"
          data-field="worker-usage"
          title={usageTitle(worker)}
        >
          {host}
        </div>
      )}
      {(worker.usage?.gpus ?? []).map(gpu => (
        <div className="trainorch-worker-usage" data-field="gpu-usage" key={gpu.id}>
          {gpuUsageText(gpu)}
        </div>
      ))}
    </li>
  );
}

/** The user's tightest GPU quota at a glance; every limit in the tooltip. */
function QuotaItem(props: { me: IMe }): JSX.Element {
  const quota = props.me.quota;
  const limits = [
    { who: 'you', ...quota },
    ...quota.groups.map(group => ({ ...group, who: `group ${group.name}` }))
  ];
  const lines = limits.map(
    l =>
      `${l.who}: GPUs ${l.gpus_held} of ${l.gpus ?? 'no limit'} held, ` +
      `jobs ${l.waiting} of ${l.queued ?? 'no limit'} waiting`
  );
  const gpuLimits = limits.filter(l => l.gpus !== null);
  const tightest = gpuLimits.sort(
    (a, b) => (b.gpus_held ?? 0) / (b.gpus ?? 1) - (a.gpus_held ?? 0) / (a.gpus ?? 1)
  )[0];
  return (
    <span
      className="trainorch-cluster-item"
      data-field="quota"
      title={`Quotas set by the admins\n${lines.join('\n')}`}
    >
      {tightest ? (
        <>
          quota <b>{tightest.gpus_held}</b>/{tightest.gpus} GPUs
          {tightest.who === 'you' ? '' : ` (${tightest.who})`}
        </>
      ) : (
        <>
          quota <b>{quota.waiting}</b>/{quota.queued ?? '∞'} waiting
        </>
      )}
    </span>
  );
}
