/**
 * The top of the sidebar: the header (who, how changes arrive), the cluster strip and
 * the list's filters.
 */
import { Button, HTMLSelect, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { SortKey } from './api';
import { Connection } from './changes';
import { DebouncedInput, useSignal } from './controls';
import { IJobActions } from './jobparts';
import { TrainorchModel } from './model';
import { ICluster, IMe, JOB_STATES, hasQuota } from './types';

const CONNECTION_TEXT: Record<Connection, string> = {
  connecting: 'connecting…',
  live: 'live',
  polling: 'polling',
  // The line below the header says it in full.
  reconnecting: ''
};

const CONNECTION_TITLE: Record<Connection, string> = {
  connecting: 'Opening the live channel',
  live: 'Changes arrive as they happen',
  polling: 'The live channel is unavailable: changes are read periodically while visible',
  reconnecting: 'The trainorch service does not answer (it may be restarting): trying again'
};

export function Header(props: { model: TrainorchModel; actions: IJobActions }): JSX.Element {
  const { model } = props;
  useSignal(model.changes.connectionChanged);
  useSignal(model.meChanged);
  const connection = model.changes.connection;
  const me = model.me;
  return (
    <>
      <div className="trainorch-header">
        <span className="trainorch-title">Training jobs</span>
        {me && (
          <span
            className="trainorch-me"
            data-field="me"
            title={`Signed in as ${me.name}${me.admin ? ' (admin)' : ''}${
              me.mode === 'hub' ? ' on a shared JupyterHub' : ''
            }`}
          >
            {me.name}
            {me.admin && me.mode === 'hub' ? ' · admin' : ''}
          </span>
        )}
        <span
          className={`trainorch-connection trainorch-connection-${connection}`}
          data-connection={connection}
          title={CONNECTION_TITLE[connection]}
          aria-label={CONNECTION_TITLE[connection]}
        >
          {CONNECTION_TEXT[connection]}
        </span>
        <Button
          minimal
          small
          className="trainorch-icon-button"
          data-action="refresh"
          title="Refresh"
          onClick={() => props.actions.refresh()}
        >
          <refreshIcon.react tag="span" />
        </Button>
      </div>
      {connection === 'reconnecting' && (
        <div
          className="trainorch-reconnecting"
          role="status"
          title={model.client.unavailable ?? undefined}
        >
          Reconnecting to the trainorch service…
        </div>
      )}
    </>
  );
}

/** Workers, GPUs and the queue; while the service does not answer, says so instead. */
export function ClusterStrip(props: { model: TrainorchModel }): JSX.Element {
  const { model } = props;
  useSignal(model.cluster.changed);
  useSignal(model.meChanged);
  useSignal(model.client.availabilityChanged);
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
  return (
    <div className="trainorch-cluster" title={clusterTitle(cluster)}>
      <span className="trainorch-cluster-item" data-field="workers">
        <b>{cluster.workers.length}</b> {cluster.workers.length === 1 ? 'worker' : 'workers'}
      </span>
      <span className="trainorch-cluster-item" data-field="gpus">
        GPUs <b>{cluster.gpus.busy}</b>/{cluster.gpus.total} busy
      </span>
      <span className="trainorch-cluster-item" data-field="queue">
        queue <b>{cluster.queue_depth}</b>
      </span>
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

function clusterTitle(cluster: ICluster): string {
  const lines = [`${cluster.kind ?? 'cluster'} ${cluster.address ?? ''}`.trim()];
  for (const w of cluster.workers) {
    const gpus = w.gpus.length ? `, GPUs free ${w.free_gpus.length}/${w.gpus.length}` : '';
    lines.push(
      `${w.name || w.address}: CPUs free ${w.free_cpus}/${w.cpus}${gpus}, ${w.running.length} running`
    );
  }
  return lines.join('\n');
}

export function Filters(props: { model: TrainorchModel }): JSX.Element {
  const { model } = props;
  const list = model.list;
  useSignal(list.changed);
  useSignal(model.meChanged);
  const q = list.query;
  const mine = model.mineUser;
  const onUser = React.useCallback((user: string) => list.setQuery({ user }), [list]);
  const onSearch = React.useCallback((search: string) => list.setQuery({ search }), [list]);
  const stateOptions = [
    { value: 'all', label: 'All states' },
    { value: 'active', label: 'Active' },
    ...JOB_STATES.map(s => ({ value: s, label: s }))
  ];
  return (
    <div className="trainorch-filters">
      <div className="trainorch-filter-row">
        <HTMLSelect
          className="trainorch-filter-state"
          aria-label="State"
          value={q.state}
          options={stateOptions}
          onChange={event => list.setQuery({ state: event.target.value })}
        />
        <HTMLSelect
          className="trainorch-filter-sort"
          aria-label="Sort"
          title="Dispatch order: higher priority first, then the earlier submission"
          value={q.sort}
          options={[
            { value: 'newest', label: 'Newest first' },
            { value: 'priority', label: 'Dispatch order' }
          ]}
          onChange={event => list.setQuery({ sort: event.target.value as SortKey })}
        />
      </div>
      <div className="trainorch-filter-row">
        <div className="trainorch-segmented" role="group" aria-label="User">
          <button
            className={`trainorch-segment${q.user === '' ? ' trainorch-mod-active' : ''}`}
            data-action="user-all"
            onClick={() => list.setQuery({ user: '' })}
          >
            All
          </button>
          <button
            className={`trainorch-segment${mine && q.user === mine ? ' trainorch-mod-active' : ''}`}
            data-action="user-mine"
            disabled={!mine}
            title={mine ? `Your jobs (${mine})` : 'Finding out who you are…'}
            onClick={() => list.setQuery({ user: mine })}
          >
            Mine
          </button>
        </div>
        <DebouncedInput
          className="trainorch-filter-user"
          placeholder="user"
          title="Show the jobs of this user"
          value={q.user}
          onChange={onUser}
        />
      </div>
      <DebouncedInput
        className="trainorch-filter-search"
        placeholder="Search name or id"
        value={q.search}
        onChange={onSearch}
        immediate
      />
    </div>
  );
}
