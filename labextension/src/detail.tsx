/**
 * A job's detail in a main-area tab: its summary, attempts, metric charts, spec and the
 * whole log, at full width. One tab per job; it follows the job through the changes the
 * model hands to its `JobDetailModel`, which the tab disposes of when it closes.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { MetricCharts } from './charts';
import { JobDetailModel } from './detailmodel';
import {
  currentAttempt,
  formatDuration,
  formatTime,
  reexecutionText,
  reexecutionTitle
} from './format';
import { trainorchIcon } from './icon';
import {
  IJobActions,
  JobActions,
  useDetailJob,
  PrioritySelect,
  ProgressBar,
  QueuePosition,
  StateChip
} from './jobparts';
import { LogView } from './logview';
import { LogTail } from './logs';
import { TrainorchModel } from './model';
import { QueueSummary, Spec, Summary } from './summary';
import { IAttempt, IJob, isRestricted, may } from './types';

/** The id of a job's tab (one per job). */
export function detailTabId(jobId: string): string {
  return `trainorch-job-${jobId}`;
}

/** The tab's content: owns the job's detail model while it is open. */
export class JobDetailWidget extends ReactWidget {
  constructor(options: { model: TrainorchModel; jobId: string; actions: IJobActions }) {
    super();
    this._model = options.model;
    this._actions = options.actions;
    this.detail = options.model.openDetail(options.jobId);
    this.addClass('trainorch-detail-widget');
    this.detail.changed.connect(this._updateTitle, this);
  }

  readonly detail: JobDetailModel;

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.closeDetail(this.detail);
    super.dispose();
  }

  protected render(): JSX.Element {
    return (
      <JobDetailView
        detail={this.detail}
        now={() => this._model.changes.serverNow()}
        actions={this._actions}
        mlflowRunUrl={mlflow => this._model.client.mlflowRunUrl(mlflow)}
      />
    );
  }

  /** The tab's label (MainAreaWidget shows the content's title). */
  private _updateTitle(): void {
    const job = this.detail.job;
    if (job) {
      this.title.label = job.name;
      this.title.caption = `Training job ${job.name} (${job.id}): ${job.state}`;
    }
  }

  private _model: TrainorchModel;
  private _actions: IJobActions;
}

export function createDetailTab(
  model: TrainorchModel,
  jobId: string,
  actions: IJobActions
): MainAreaWidget<JobDetailWidget> {
  const content = new JobDetailWidget({ model, jobId, actions });
  content.title.label = model.findJob(jobId)?.name ?? `Job ${jobId}`;
  content.title.icon = trainorchIcon;
  content.title.closable = true;
  const widget = new MainAreaWidget({ content });
  widget.id = detailTabId(jobId);
  widget.addClass('trainorch-detail-tab');
  return widget;
}

function JobDetailView(props: {
  detail: JobDetailModel;
  now: () => number;
  actions: IJobActions;
  mlflowRunUrl: (mlflow: IJob['mlflow']) => string | null;
}): JSX.Element {
  const { detail, actions, mlflowRunUrl } = props;
  const job = useDetailJob(detail);
  if (!job) {
    return (
      <div className="trainorch-detail" data-detail-job-id={detail.jobId}>
        <div className="trainorch-detail-header">
          <span className="trainorch-detail-title">{detail.jobId}</span>
        </div>
        {detail.error ? (
          <div className="trainorch-error">{detail.error}</div>
        ) : (
          <div className="trainorch-empty">Loading…</div>
        )}
      </div>
    );
  }
  const now = props.now();
  const tail = detail.logTail;
  const header = (
    <div className="trainorch-detail-header">
      <StateChip state={job.state} />
      <span className="trainorch-detail-title" title={job.name}>
        {job.name}
      </span>
      <QueuePosition job={job} />
    </div>
  );
  const actionRow = (
    <div className="trainorch-detail-actions">
      <span className="trainorch-detail-id" title="Job id">
        {job.id}
      </span>
      {may(job, 'set_priority') && <PrioritySelect job={job} actions={actions} />}
      <JobActions job={job} actions={actions} />
    </div>
  );
  if (isRestricted(job)) {
    return (
      <div
        className="trainorch-detail"
        data-detail-job-id={job.id}
        data-state={job.state}
        data-restricted="true"
      >
        {header}
        {actionRow}
        <div className="trainorch-notice trainorch-restricted-note" data-field="restricted">
          This job belongs to {job.user}. Only its owner and admins see its logs, progress, params
          and metrics.
        </div>
        <QueueSummary job={job} now={now} />
      </div>
    );
  }
  const reexecuted = reexecutionText(job);
  return (
    <div className="trainorch-detail" data-detail-job-id={job.id} data-state={job.state}>
      {header}
      {actionRow}
      {job.wait_reason && (
        <div className="trainorch-wait-reason" data-field="wait_reason">
          {job.wait_reason}
        </div>
      )}
      <ProgressBar job={job} now={now} />
      {job.progress?.message && (
        <div className="trainorch-progress-message">{job.progress.message}</div>
      )}
      {reexecuted && (
        <div
          className="trainorch-reexecuted"
          data-field="reexecutions"
          title={reexecutionTitle(job)}
        >
          {reexecuted}
        </div>
      )}
      {job.error && <div className="trainorch-error">{job.error}</div>}
      <div className="trainorch-detail-columns">
        <div className="trainorch-detail-column">
          <Summary job={job} now={now} open={actions.open} mlflowRunUrl={mlflowRunUrl} />
          <Attempts job={job} tail={tail} detail={detail} />
        </div>
        <div className="trainorch-detail-column">
          <MetricCharts job={job} history={detail.metrics} attempt={tail?.attempt ?? null} />
          <Spec job={job} />
        </div>
      </div>
      {tail && (
        <LogView
          key={`${job.id}:${tail.attempt}`}
          tail={tail}
          switcher={<AttemptSwitch job={job} tail={tail} detail={detail} />}
        />
      )}
    </div>
  );
}

/** Which attempt's log to show: all of them in order, or one. */
function AttemptSwitch(props: {
  job: IJob;
  tail: LogTail;
  detail: JobDetailModel;
}): JSX.Element | null {
  const { job, tail, detail } = props;
  if (job.attempts.length < 2) {
    return null;
  }
  const selected = tail.attempt;
  return (
    <span className="trainorch-attempt-switch" role="tablist" aria-label="Log of attempt">
      <button
        role="tab"
        aria-selected={selected === null}
        className={`trainorch-segment${selected === null ? ' trainorch-mod-active' : ''}`}
        data-action="attempt"
        data-attempt="all"
        title="The log of every attempt, in order"
        onClick={() => detail.selectAttempt(null)}
      >
        all
      </button>
      {job.attempts.map(a => (
        <button
          key={a.n}
          role="tab"
          aria-selected={selected === a.n}
          className={`trainorch-segment${selected === a.n ? ' trainorch-mod-active' : ''}`}
          data-action="attempt"
          data-attempt={a.n}
          title={`The log of attempt ${a.n}`}
          onClick={() => detail.selectAttempt(a.n)}
        >
          #{a.n}
        </button>
      ))}
    </span>
  );
}

function Attempts(props: { job: IJob; tail: LogTail | null; detail: JobDetailModel }): JSX.Element {
  const { job, tail, detail } = props;
  const selected = tail?.attempt ?? null;
  const running = currentAttempt(job);
  return (
    <section className="trainorch-attempts-section">
      <div className="trainorch-section-title">Attempts</div>
      {job.attempts.length === 0 ? (
        <div className="trainorch-muted">Not started yet.</div>
      ) : (
        <table className="trainorch-attempt-table">
          <colgroup>
            <col className="trainorch-col-n" />
            <col className="trainorch-col-state" />
            <col />
            <col className="trainorch-col-gpus" />
            <col className="trainorch-col-exit" />
          </colgroup>
          <thead>
            <tr>
              <th>#</th>
              <th>state</th>
              <th>worker</th>
              <th>GPUs</th>
              <th>exit</th>
            </tr>
          </thead>
          <tbody>
            {job.attempts.map(a => (
              <AttemptRow
                key={a.n}
                attempt={a}
                selected={selected === a.n}
                current={running?.n === a.n}
                detail={detail}
              />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function AttemptRow(props: {
  attempt: IAttempt;
  selected: boolean;
  current: boolean;
  detail: JobDetailModel;
}): JSX.Element {
  const { attempt: a, selected, current, detail } = props;
  const duration =
    a.started && a.ended
      ? formatDuration((Date.parse(a.ended) - Date.parse(a.started)) / 1000)
      : '';
  return (
    <>
      <tr
        className={`trainorch-attempt${selected ? ' trainorch-mod-selected' : ''}${current ? ' trainorch-mod-current' : ''}`}
        data-attempt={a.n}
        onClick={() => detail.selectAttempt(selected ? null : a.n)}
        title={attemptTitle(a, duration)}
      >
        <td>{a.n}</td>
        <td>
          <StateChip state={a.state} />
          {a.cause && CAUSE_LABEL[a.cause] ? (
            <span className="trainorch-muted" data-field="cause" title={CAUSE_TITLE[a.cause]}>
              {' '}
              {CAUSE_LABEL[a.cause]}
            </span>
          ) : null}
        </td>
        <td className="trainorch-attempt-worker" title={a.worker ?? undefined}>
          {a.worker ?? ''}
        </td>
        <td className="trainorch-attempt-gpus">{a.gpu_ids.join(',')}</td>
        <td className="trainorch-attempt-exit">{a.exit_code ?? ''}</td>
      </tr>
      {a.error && (
        <tr className="trainorch-attempt-error-row">
          <td />
          <td colSpan={4} className="trainorch-attempt-error">
            {a.error}
          </td>
        </tr>
      )}
    </>
  );
}

/** Why an attempt ended, where its state alone does not say it. */
const CAUSE_LABEL: Record<string, string> = {
  infrastructure: 'infra',
  out_of_memory: 'out of memory',
  timeout: 'timeout'
};

const CAUSE_TITLE: Record<string, string> = {
  infrastructure: "Lost to a worker or a restart, not the job's fault: retried on its own budget",
  out_of_memory: 'Its processes used more memory than the job claimed',
  timeout: 'It ran past its time limit'
};

function attemptTitle(a: IAttempt, duration: string): string {
  const parts = [formatTime(a.started), duration];
  if (a.process_started) {
    parts.push(`process started ${formatTime(a.process_started)}`);
  }
  if (a.pid) {
    parts.push(`pid ${a.pid}`);
  }
  if (a.infrastructure) {
    parts.push('lost to the infrastructure, not the job');
  }
  return parts.filter(Boolean).join(' · ');
}
