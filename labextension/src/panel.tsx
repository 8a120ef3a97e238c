/**
 * The sidebar's views. They render what JobsModel holds and hand user actions to
 * IJobActions (implemented by the plugin as commands); they fetch nothing themselves.
 *
 * Everything from the server (names, errors, params) goes into React text nodes, never
 * into HTML; log lines go through ansi_up, which escapes their text and adds only its own
 * colour spans.
 */
import {
  Button,
  HTMLSelect,
  ReactWidget,
  closeIcon,
  copyIcon,
  launchIcon,
  redoIcon,
  refreshIcon,
  runIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

import { CheckboxOption } from './controls';
import {
  attemptsText,
  currentAttempt,
  elapsedSeconds,
  etaSeconds,
  formatBytes,
  formatDuration,
  formatTime,
  gpusHeld,
  mlflowModelText,
  mlflowWarning,
  priorityLabel,
  progressFraction,
  queueText,
  reexecutionText,
  reexecutionTitle,
  stepText
} from './format';
import { MetricCharts } from './charts';
import { trainorchIcon } from './icon';
import { IRenderedLine, LogTail, firstErrorLine, logFileText, renderLines, saveText } from './logs';
import { Connection, JobsModel } from './model';
import {
  IAttempt,
  ICluster,
  IJob,
  IJobRow,
  IJobSpec,
  IQueueRow,
  JOB_STATES,
  PRIORITY_CLASSES,
  isRestricted,
  may
} from './types';

/** What the buttons do; the plugin implements it with its commands. */
export interface IJobActions {
  cancel(id: string): void;
  retry(id: string): void;
  clone(id: string): void;
  setPriority(id: string, priority: string): void;
  refresh(): void;
  /** Submit a finished job again, byte for byte. */
  rerun(id: string): void;
  /** Open the comparison tab for these jobs. */
  compare(ids: string[]): void;
}

export const PANEL_ID = 'trainorch-panel';

/** The left-sidebar widget: cluster strip, filters, the job list and one job's detail. */
export class TrainorchPanel extends ReactWidget {
  constructor(options: TrainorchPanel.IOptions) {
    super();
    this.model = options.model;
    this._actions = options.actions;
    this.id = PANEL_ID;
    this.addClass('trainorch-panel');
    this.title.icon = trainorchIcon;
    this.title.caption = 'Training jobs';
  }

  readonly model: JobsModel;

  protected render(): JSX.Element {
    return <PanelView model={this.model} actions={this._actions} />;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  private _actions: IJobActions;
}

export namespace TrainorchPanel {
  export interface IOptions {
    model: JobsModel;
    actions: IJobActions;
  }
}

// -- hooks ---------------------------------------------------------------------------

/** Re-render when `signal` fires. */
function useSignal(signal: ISignal<unknown, unknown>): void {
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    const slot = (): void => setCount(count => count + 1);
    signal.connect(slot);
    return () => {
      signal.disconnect(slot);
    };
  }, [signal]);
}

/** Re-render every second while `active`, so elapsed times and ETAs move. */
function useTick(active: boolean): void {
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    if (!active) {
      return;
    }
    const timer = window.setInterval(() => setCount(count => count + 1), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
}

/** A text input that reports its value once typing pauses. */
function DebouncedInput(props: {
  value: string;
  onChange: (value: string) => void;
  placeholder: string;
  className: string;
  title?: string;
}): JSX.Element {
  const { value, onChange } = props;
  const [text, setText] = React.useState(value);
  React.useEffect(() => setText(value), [value]);
  React.useEffect(() => {
    if (text === value) {
      return;
    }
    const timer = window.setTimeout(() => onChange(text), 300);
    return () => window.clearTimeout(timer);
  }, [text, value, onChange]);
  return (
    <input
      type="search"
      className={`jp-mod-styled trainorch-input ${props.className}`}
      placeholder={props.placeholder}
      title={props.title}
      value={text}
      onChange={event => setText(event.target.value)}
      onKeyDown={event => {
        if (event.key === 'Enter') {
          onChange(text);
        }
      }}
    />
  );
}

function stop(event: React.SyntheticEvent): void {
  event.stopPropagation();
}

// -- panel -----------------------------------------------------------------------------

function PanelView(props: { model: JobsModel; actions: IJobActions }): JSX.Element {
  const { model, actions } = props;
  return (
    <div className="trainorch-root">
      <Header model={model} actions={actions} />
      <ClusterStrip model={model} />
      <Filters model={model} />
      <JobList model={model} actions={actions} />
      <DetailSlot model={model} actions={actions} />
    </div>
  );
}

/** Re-renders with the detail alone, so a busy job's progress leaves the list be. */
function DetailSlot(props: { model: JobsModel; actions: IJobActions }): JSX.Element | null {
  useSignal(props.model.detailChanged);
  return props.model.selectedId ? <JobDetail model={props.model} actions={props.actions} /> : null;
}

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
  polling: 'The live channel is unavailable: the list is read periodically while visible',
  reconnecting: 'The trainorch service does not answer (it may be restarting): trying again'
};

function Header(props: { model: JobsModel; actions: IJobActions }): JSX.Element {
  const { model } = props;
  useSignal(model.connectionChanged);
  useSignal(model.listChanged);
  const connection = model.connection;
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
          title={model.unavailable ?? undefined}
        >
          Reconnecting to the trainorch service…
        </div>
      )}
    </>
  );
}

// -- cluster ----------------------------------------------------------------------------

function ClusterStrip(props: { model: JobsModel }): JSX.Element {
  const { model } = props;
  useSignal(model.clusterChanged);
  const cluster = model.cluster;
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
      {cluster.waiting_on_dependencies > 0 && (
        <span className="trainorch-cluster-item" data-field="waiting">
          waiting <b>{cluster.waiting_on_dependencies}</b>
        </span>
      )}
      {cluster.dashboard && (
        <a
          className="trainorch-cluster-item trainorch-link"
          href={model.dashboardUrl}
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

// -- filters -----------------------------------------------------------------------------

function Filters(props: { model: JobsModel }): JSX.Element {
  const { model } = props;
  useSignal(model.listChanged);
  const q = model.query;
  const mine = model.mineUser;
  const onUser = React.useCallback((user: string) => model.setQuery({ user }), [model]);
  const onSearch = React.useCallback((search: string) => model.setQuery({ search }), [model]);
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
          onChange={event => model.setQuery({ state: event.target.value })}
        />
        <HTMLSelect
          className="trainorch-filter-sort"
          aria-label="Sort"
          value={q.sort}
          options={[
            { value: 'submitted', label: 'Newest first' },
            { value: 'priority', label: 'Priority' }
          ]}
          onChange={event =>
            model.setQuery({ sort: event.target.value as 'submitted' | 'priority' })
          }
        />
      </div>
      <div className="trainorch-filter-row">
        <div className="trainorch-segmented" role="group" aria-label="User">
          <button
            className={`trainorch-segment${q.user === '' ? ' trainorch-mod-active' : ''}`}
            data-action="user-all"
            onClick={() => model.setQuery({ user: '' })}
          >
            All
          </button>
          <button
            className={`trainorch-segment${mine && q.user === mine ? ' trainorch-mod-active' : ''}`}
            data-action="user-mine"
            disabled={!mine}
            title={mine ? `Your jobs (${mine})` : 'Finding out who you are…'}
            onClick={() => model.setQuery({ user: mine })}
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
      />
    </div>
  );
}

// -- list -----------------------------------------------------------------------------------

function JobList(props: { model: JobsModel; actions: IJobActions }): JSX.Element {
  const { model, actions } = props;
  useSignal(model.listChanged);
  const jobs = model.jobs;
  useTick(model.visible && jobs.some(job => !job.terminal));
  const now = model.serverNow();
  const q = model.query;
  const first = model.total ? q.page * model.pageSize + 1 : 0;
  const last = Math.min(model.total, (q.page + 1) * model.pageSize);
  const checked = [...model.checked];
  return (
    <div className="trainorch-list-section">
      {checked.length > 0 && (
        <div className="trainorch-compare-bar">
          <span>{checked.length} selected</span>
          <Button
            small
            data-action="compare"
            disabled={checked.length < 2}
            title={checked.length < 2 ? 'Select at least two jobs' : 'Compare the selected jobs'}
            onClick={() => actions.compare(checked)}
          >
            Compare
          </Button>
          <Button minimal small data-action="clear-selection" onClick={() => model.clearChecked()}>
            Clear
          </Button>
        </div>
      )}
      {model.error && (
        <div className="trainorch-error" role="alert">
          {model.error}
        </div>
      )}
      <div className="trainorch-list" role="list">
        {jobs.length === 0 && (
          <div className="trainorch-empty">
            {model.loading ? 'Loading…' : model.error ? '' : 'No jobs match.'}
          </div>
        )}
        {groupJobs(jobs).map(item =>
          item.group ? (
            <JobGroup
              key={`group:${item.group}`}
              group={item.group}
              jobs={item.jobs}
              now={now}
              model={model}
              actions={actions}
            />
          ) : (
            <JobRow
              key={item.jobs[0].id}
              job={item.jobs[0]}
              now={now}
              selected={item.jobs[0].id === model.selectedId}
              model={model}
              actions={actions}
            />
          )
        )}
      </div>
      <div className="trainorch-pager">
        <Button
          minimal
          small
          data-action="prev-page"
          disabled={q.page <= 0}
          onClick={() => model.setQuery({ page: q.page - 1 })}
          title="Newer jobs"
        >
          ‹
        </Button>
        <span className="trainorch-pager-text">
          {first}–{last} of {model.total}
          {model.capped ? ' (of the newest 1000)' : ''}
        </span>
        <Button
          minimal
          small
          data-action="next-page"
          disabled={q.page + 1 >= model.pageCount}
          onClick={() => model.setQuery({ page: q.page + 1 })}
          title="Older jobs"
        >
          ›
        </Button>
      </div>
    </div>
  );
}

/**
 * Jobs of one sweep group together, at the place of the group's first job in the
 * current sort; the other jobs stay where they are.
 */
function groupJobs(jobs: readonly IJobRow[]): { group: string; jobs: IJobRow[] }[] {
  const items: { group: string; jobs: IJobRow[] }[] = [];
  const byGroup = new Map<string, IJobRow[]>();
  for (const job of jobs) {
    const group = isRestricted(job) ? '' : (job.group ?? '');
    if (!group) {
      items.push({ group: '', jobs: [job] });
      continue;
    }
    let members = byGroup.get(group);
    if (!members) {
      members = [];
      byGroup.set(group, members);
      items.push({ group, jobs: members });
    }
    members.push(job);
  }
  return items;
}

function JobGroup(props: {
  group: string;
  jobs: IJobRow[];
  now: number;
  model: JobsModel;
  actions: IJobActions;
}): JSX.Element {
  const { group, jobs, now, model, actions } = props;
  const [open, setOpen] = React.useState(true);
  const counts = new Map<string, number>();
  for (const job of jobs) {
    counts.set(job.state, (counts.get(job.state) ?? 0) + 1);
  }
  const readable = jobs.filter(job => may(job, 'read'));
  return (
    <div className="trainorch-group" data-group={group} role="group" aria-label={`Sweep ${group}`}>
      <div
        className="trainorch-group-header"
        role="button"
        aria-expanded={open}
        tabIndex={0}
        data-action="toggle-group"
        onClick={() => setOpen(!open)}
        onKeyDown={event => {
          if (event.key === 'Enter' && event.target === event.currentTarget) {
            setOpen(!open);
          }
        }}
      >
        <span className="trainorch-group-caret">{open ? '▾' : '▸'}</span>
        <span className="trainorch-group-name" title={`Sweep group ${group}`}>
          {group}
        </span>
        <span className="trainorch-group-count">{jobs.length}</span>
        <span className="trainorch-group-states">
          {[...counts.entries()].map(([state, count]) => (
            <span key={state} className={`trainorch-state trainorch-state-${state}`}>
              {count} {state}
            </span>
          ))}
        </span>
        <Button
          minimal
          small
          className="trainorch-group-compare"
          data-action="compare-group"
          disabled={readable.length < 2}
          title="Compare every job of this group"
          onClick={event => {
            event.stopPropagation();
            actions.compare(readable.map(j => j.id));
          }}
        >
          compare group
        </Button>
      </div>
      {open &&
        jobs.map(job => (
          <JobRow
            key={job.id}
            job={job}
            now={now}
            selected={job.id === model.selectedId}
            model={model}
            actions={actions}
          />
        ))}
    </div>
  );
}

function ProgressBar(props: { job: IJob; now: number }): JSX.Element {
  const { job, now } = props;
  const fraction = progressFraction(job);
  const step = stepText(job);
  const eta = etaSeconds(job, now);
  const parts: string[] = [];
  if (step) {
    parts.push(step);
  }
  if (fraction !== null) {
    parts.push(`${Math.floor(fraction * 100)}%`);
  }
  if (eta !== null && eta > 0) {
    parts.push(`ETA ${formatDuration(eta)}`);
  }
  const show = fraction !== null || step !== '';
  return (
    <div className="trainorch-progress" title={job.progress?.message ?? undefined}>
      {show && (
        <>
          <div
            className="trainorch-progress-bar"
            role="progressbar"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={fraction === null ? undefined : Math.round(fraction * 100)}
          >
            <div
              className={`trainorch-progress-fill trainorch-progress-${job.state}`}
              style={{ width: `${((fraction ?? 0) * 100).toFixed(1)}%` }}
            />
          </div>
          <span className="trainorch-progress-text">{parts.join(' · ')}</span>
        </>
      )}
    </div>
  );
}

function StateChip(props: { state: string }): JSX.Element {
  return <span className={`trainorch-state trainorch-state-${props.state}`}>{props.state}</span>;
}

function PrioritySelect(props: {
  job: IJobRow;
  actions: IJobActions;
  className?: string;
}): JSX.Element {
  const { job, actions } = props;
  const current = job.priority_class;
  const options: { value: string; label: string }[] = PRIORITY_CLASSES.map(p => ({
    value: p,
    label: p
  }));
  if (!PRIORITY_CLASSES.includes(current as (typeof PRIORITY_CLASSES)[number])) {
    options.push({ value: current, label: current });
  }
  return (
    <HTMLSelect
      className={`trainorch-priority-select ${props.className ?? ''}`}
      data-action="priority"
      title="Priority (can change until the job starts)"
      value={current}
      options={options}
      onClick={stop}
      onChange={event => actions.setPriority(job.id, event.target.value)}
    />
  );
}

/** The priority: a select while the user may change it, else its label. */
function Priority(props: { job: IJobRow; actions: IJobActions }): JSX.Element {
  const { job, actions } = props;
  return may(job, 'set_priority') ? (
    <PrioritySelect job={job} actions={actions} className="trainorch-priority" />
  ) : (
    <span
      className={`trainorch-priority trainorch-priority-${job.priority_class}`}
      title="Priority"
    >
      {priorityLabel(job)}
    </span>
  );
}

/** `#3 in queue`, for a job waiting in the service's queue. */
function QueuePosition(props: { job: IJobRow }): JSX.Element | null {
  const text = queueText(props.job);
  return text ? (
    <span
      className="trainorch-queue-position"
      data-field="queue_position"
      title={props.job.wait_reason || 'Place in the queue: #1 is dispatched next'}
    >
      {text}
    </span>
  ) : null;
}

function ActionButton(props: {
  action: string;
  title: string;
  icon: typeof runIcon;
  onClick: () => void;
}): JSX.Element {
  const Icon = props.icon;
  return (
    <Button
      minimal
      small
      className="trainorch-icon-button"
      data-action={props.action}
      title={props.title}
      onClick={props.onClick}
    >
      <Icon.react tag="span" />
    </Button>
  );
}

/**
 * The buttons the job's `actions` allow (none for another user's job). A list row
 * (with `open`) leaves rerun to ended jobs, to keep room for the name.
 */
function JobActions(props: { job: IJobRow; actions: IJobActions; open?: () => void }): JSX.Element {
  const { job, actions } = props;
  return (
    <span className="trainorch-actions" onClick={stop}>
      {props.open && (
        <ActionButton
          action="open"
          title="Details and log"
          icon={launchIcon}
          onClick={props.open}
        />
      )}
      {may(job, 'cancel') && (
        <ActionButton
          action="cancel"
          title="Cancel"
          icon={stopIcon}
          onClick={() => actions.cancel(job.id)}
        />
      )}
      {may(job, 'retry') && (
        <ActionButton
          action="retry"
          title="Retry"
          icon={runIcon}
          onClick={() => actions.retry(job.id)}
        />
      )}
      {may(job, 'rerun') && (job.terminal || !props.open) && (
        <ActionButton
          action="rerun"
          title="Rerun: submit the same job again"
          icon={redoIcon}
          onClick={() => actions.rerun(job.id)}
        />
      )}
      {may(job, 'read') && (
        <ActionButton
          action="clone"
          title="Clone into a new cell of the active notebook"
          icon={copyIcon}
          onClick={() => actions.clone(job.id)}
        />
      )}
    </span>
  );
}

function JobRow(props: {
  job: IJobRow;
  now: number;
  selected: boolean;
  model: JobsModel;
  actions: IJobActions;
}): JSX.Element {
  const { job, now, selected, model, actions } = props;
  const open = (): void => model.select(job.id);
  const restricted = isRestricted(job);
  return (
    <div
      className={`trainorch-job${selected ? ' trainorch-mod-selected' : ''}${
        restricted ? ' trainorch-mod-restricted' : ''
      }`}
      data-job-id={job.id}
      data-state={job.state}
      data-restricted={restricted ? 'true' : undefined}
      role="listitem"
      aria-current={selected ? 'true' : undefined}
      tabIndex={0}
      onClick={open}
      onKeyDown={event => {
        if (event.key === 'Enter' && event.target === event.currentTarget) {
          open();
        }
      }}
    >
      <div className="trainorch-job-line">
        {restricted ? (
          <span className="trainorch-check-placeholder" />
        ) : (
          <input
            type="checkbox"
            className="trainorch-check"
            data-action="select"
            aria-label={`Select ${job.name} for comparison`}
            title="Select for comparison"
            checked={model.checked.has(job.id)}
            onClick={stop}
            onChange={event => model.setChecked(job.id, event.target.checked)}
          />
        )}
        <StateChip state={job.state} />
        <span className="trainorch-job-name" title={`${job.name} (${job.id})`}>
          {job.name}
        </span>
        <JobActions job={job} actions={actions} open={open} />
      </div>
      {restricted ? (
        <RestrictedMeta job={job} actions={actions} />
      ) : (
        <>
          <ProgressBar job={job} now={now} />
          <JobMeta job={job} now={now} actions={actions} />
        </>
      )}
    </div>
  );
}

function JobMeta(props: { job: IJob; now: number; actions: IJobActions }): JSX.Element {
  const { job, now, actions } = props;
  const gpus = gpusHeld(job);
  return (
    <div className="trainorch-job-meta">
      <span className="trainorch-user" title="User">
        {job.user}
      </span>
      <QueuePosition job={job} />
      {gpus && (
        <span className="trainorch-gpus" title="GPUs held by the running attempt">
          GPU {gpus}
        </span>
      )}
      <span
        className="trainorch-attempt-label"
        title="Attempt, out of the attempts its retries allow"
      >
        try <span className="trainorch-attempts">{attemptsText(job)}</span>
      </span>
      <span
        className="trainorch-elapsed"
        title={job.started ? 'Run time' : job.terminal ? 'Ended without running' : 'Waiting'}
      >
        {formatDuration(elapsedSeconds(job, now))}
      </span>
      <Priority job={job} actions={actions} />
    </div>
  );
}

/** Another user's job: who, where in the queue, how many GPUs and which priority. */
function RestrictedMeta(props: { job: IQueueRow; actions: IJobActions }): JSX.Element {
  const { job, actions } = props;
  const gpus = job.resources?.gpus ?? 0;
  return (
    <div className="trainorch-job-meta">
      <span className="trainorch-user" title="User">
        {job.user}
      </span>
      <QueuePosition job={job} />
      {gpus > 0 && (
        <span className="trainorch-gpus" title="GPUs the job asks for">
          {gpus} GPU
        </span>
      )}
      <Priority job={job} actions={actions} />
    </div>
  );
}

// -- detail -----------------------------------------------------------------------------------

function JobDetail(props: { model: JobsModel; actions: IJobActions }): JSX.Element {
  const { model, actions } = props;
  const job = model.detail;
  useTick(model.visible && !!job && !job.terminal);
  const close = (
    <Button
      minimal
      small
      className="trainorch-icon-button"
      data-action="close"
      title="Close"
      onClick={() => model.select(null)}
    >
      <closeIcon.react tag="span" />
    </Button>
  );
  if (!job) {
    return (
      <div className="trainorch-detail" data-detail-job-id={model.selectedId ?? ''}>
        <div className="trainorch-detail-header">
          <span className="trainorch-detail-title">{model.selectedId}</span>
          {close}
        </div>
        {model.detailError ? (
          <div className="trainorch-error">{model.detailError}</div>
        ) : (
          <div className="trainorch-empty">Loading…</div>
        )}
      </div>
    );
  }
  const now = model.serverNow();
  const tail = model.logTail;
  const header = (
    <div className="trainorch-detail-header">
      <StateChip state={job.state} />
      <span className="trainorch-detail-title" title={job.name}>
        {job.name}
      </span>
      <QueuePosition job={job} />
      {close}
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
        <div className="trainorch-detail-body">
          {actionRow}
          <div className="trainorch-notice trainorch-restricted-note" data-field="restricted">
            This job belongs to {job.user}. Only its owner and admins see its logs, progress, params
            and metrics.
          </div>
          <QueueSummary job={job} now={now} />
        </div>
      </div>
    );
  }
  const reexecuted = reexecutionText(job);
  return (
    <div className="trainorch-detail" data-detail-job-id={job.id} data-state={job.state}>
      {header}
      <div className="trainorch-detail-body">
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
        {tail && (
          <LogView
            key={`${job.id}:${tail.attempt}`}
            tail={tail}
            switcher={<AttemptSwitch job={job} tail={tail} model={model} />}
          />
        )}
        <Attempts job={job} tail={tail} model={model} />
        <Summary job={job} now={now} model={model} />
        <MetricCharts job={job} history={model.metrics} attempt={tail?.attempt ?? null} />
        <Spec job={job} />
      </div>
    </div>
  );
}

function Field(props: { label: string; children: React.ReactNode; field?: string }): JSX.Element {
  return (
    <>
      <dt>{props.label}</dt>
      <dd data-field={props.field}>{props.children}</dd>
    </>
  );
}

/** What anyone sees of another user's job in the detail. */
function QueueSummary(props: { job: IQueueRow; now: number }): JSX.Element {
  const { job, now } = props;
  const r = job.resources;
  return (
    <dl className="trainorch-summary">
      <Field label="User" field="user">
        {job.user}
      </Field>
      <Field label="Priority" field="priority">
        {priorityLabel(job)} ({job.priority})
      </Field>
      {r && <ResourcesField resources={r} />}
      <TimeFields job={job} now={now} />
    </dl>
  );
}

/** Resources as one line: GPUs, CPUs, memory. */
function ResourcesField(props: { resources: IJob['resources'] }): JSX.Element {
  const r = props.resources;
  return (
    <Field label="Resources" field="resources">
      {r.gpus} GPU · {r.cpus} CPU{r.memory ? ` · ${formatBytes(r.memory)}` : ''}
    </Field>
  );
}

/** When the job was submitted, started and ended, and how long it has run or waited. */
function TimeFields(props: { job: IJobRow; now: number; eta?: number | null }): JSX.Element {
  const { job, now, eta } = props;
  return (
    <>
      <Field label="Submitted" field="created">
        {formatTime(job.created)}
      </Field>
      {job.started && (
        <Field label="Started" field="started">
          {formatTime(job.started)}
        </Field>
      )}
      {job.ended && (
        <Field label="Ended" field="ended">
          {formatTime(job.ended)}
        </Field>
      )}
      <Field label={job.started ? 'Run time' : 'Waiting'} field="elapsed">
        {formatDuration(elapsedSeconds(job, now))}
        {eta !== undefined && eta !== null && eta > 0 ? ` · ETA ${formatDuration(eta)}` : ''}
      </Field>
    </>
  );
}

function Summary(props: { job: IJob; now: number; model: JobsModel }): JSX.Element {
  const { job, now, model } = props;
  const r = job.resources;
  const template = job.template?.name
    ? `${job.template.name}${job.template.version ? ` v${job.template.version}` : ''}`
    : '';
  const eta = etaSeconds(job, now);
  const warning = mlflowWarning(job);
  const registered = mlflowModelText(job);
  return (
    <dl className="trainorch-summary">
      <Field label="User" field="user">
        {job.user}
      </Field>
      <Field label="Priority" field="priority">
        {priorityLabel(job)} ({job.priority})
      </Field>
      <Field label="Kind" field="kind">
        {job.kind}
        {template && ` · ${template}`}
        {job.template?.hash && (
          <span className="trainorch-muted"> {job.template.hash.slice(0, 10)}</span>
        )}
      </Field>
      <ResourcesField resources={r} />
      <Field label="Attempts" field="attempts">
        {attemptsText(job)}
        {job.timeout ? ` · timeout ${formatDuration(job.timeout)}` : ''}
      </Field>
      <TimeFields job={job} now={now} eta={eta} />
      {job.depends_on.length > 0 && (
        <Field label="Depends on" field="depends_on">
          {job.depends_on.map(dep => (
            <button
              key={dep}
              className="trainorch-link trainorch-dep"
              data-action="open-dependency"
              data-job-id-ref={dep}
              onClick={() => model.select(dep)}
            >
              {dep}
            </button>
          ))}
        </Field>
      )}
      <Field label="MLflow" field="mlflow">
        {job.mlflow?.url ? (
          <a
            className="trainorch-link trainorch-mlflow"
            href={job.mlflow.url}
            target="_blank"
            rel="noopener noreferrer"
            title={job.mlflow.run_id ?? job.mlflow.url}
          >
            run {(job.mlflow.run_id ?? '').slice(0, 12)}
          </a>
        ) : job.mlflow?.run_id ? (
          <span className="trainorch-mlflow" title={job.mlflow.run_id}>
            run {job.mlflow.run_id.slice(0, 12)}
          </span>
        ) : (
          <span className="trainorch-muted">not tracked</span>
        )}
        {warning && (
          <div className="trainorch-notice" data-field="mlflow-warning" title={warning}>
            {warning}
          </div>
        )}
      </Field>
      {registered && (
        <Field label="Model" field="model">
          {registered}
        </Field>
      )}
      {job.rerun_of && (
        <Field label="Rerun of" field="rerun_of">
          <button
            className="trainorch-link trainorch-dep"
            data-action="open-rerun-of"
            onClick={() => model.select(job.rerun_of ?? null)}
          >
            {job.rerun_of}
          </button>
        </Field>
      )}
      {job.group && (
        <Field label="Group" field="group">
          {job.group}
        </Field>
      )}
      {job.outputs.length > 0 && (
        <Field label="Outputs" field="outputs">
          {job.outputs.join(', ')}
          {job.has_outputs ? ' (ready)' : ''}
        </Field>
      )}
    </dl>
  );
}

/** Which attempt's log to show: all of them in order, or one. */
function AttemptSwitch(props: { job: IJob; tail: LogTail; model: JobsModel }): JSX.Element | null {
  const { job, tail, model } = props;
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
        onClick={() => model.selectAttempt(null)}
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
          onClick={() => model.selectAttempt(a.n)}
        >
          #{a.n}
        </button>
      ))}
    </span>
  );
}

function Attempts(props: { job: IJob; tail: LogTail | null; model: JobsModel }): JSX.Element {
  const { job, tail, model } = props;
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
                model={model}
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
  model: JobsModel;
}): JSX.Element {
  const { attempt: a, selected, current, model } = props;
  const duration =
    a.started && a.ended
      ? formatDuration((Date.parse(a.ended) - Date.parse(a.started)) / 1000)
      : '';
  return (
    <>
      <tr
        className={`trainorch-attempt${selected ? ' trainorch-mod-selected' : ''}${current ? ' trainorch-mod-current' : ''}`}
        data-attempt={a.n}
        onClick={() => model.selectAttempt(selected ? null : a.n)}
        title={attemptTitle(a, duration)}
      >
        <td>{a.n}</td>
        <td>
          <StateChip state={a.state} />
          {a.infrastructure ? <span className="trainorch-muted"> infra</span> : null}
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

/** Ids of the rendered lines whose plain text contains `needle` (already lower-cased). */
function matchIds(rendered: readonly IRenderedLine[], needle: string): number[] {
  return needle
    ? rendered.filter(r => r.plain.toLowerCase().includes(needle)).map(r => r.line.id)
    : [];
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function LogView(props: { tail: LogTail; switcher: React.ReactNode }): JSX.Element {
  const { tail } = props;
  useSignal(tail.changed);
  const ref = React.useRef<HTMLDivElement>(null);
  // Set just before older lines are prepended: the line that was first, and how far
  // below the top of the view it was, so the reader's place survives the reload.
  const anchor = React.useRef<{ firstId: number; offset: number } | null>(null);
  // A line to bring into view after the next render (a search match, the first error).
  const reveal = React.useRef<number | null>(null);
  const lines = tail.lines;
  // ANSI colours as escaped HTML (ansi_up escapes the job's text), and the plain text.
  const rendered = React.useMemo(() => renderLines(lines), [lines]);
  const [search, setSearch] = React.useState('');
  const [current, setCurrent] = React.useState(0);
  const [onlyMatches, setOnlyMatches] = React.useState(false);
  const [wrap, setWrap] = React.useState(true);
  const [errorId, setErrorId] = React.useState<number | null>(null);
  const [note, setNote] = React.useState<string | null>(null);
  const [downloading, setDownloading] = React.useState(false);

  const needle = search.trim().toLowerCase();
  const matches = React.useMemo(() => matchIds(rendered, needle), [rendered, needle]);
  const index = matches.length ? Math.min(current, matches.length - 1) : -1;
  const currentId = index >= 0 ? matches[index] : null;
  const matchSet = React.useMemo(() => new Set(matches), [matches]);
  const filtering = onlyMatches && needle !== '';

  React.useLayoutEffect(() => {
    const el = ref.current;
    if (!el) {
      return;
    }
    if (reveal.current !== null) {
      const node = el.querySelector<HTMLElement>(`[data-line-id="${reveal.current}"]`);
      reveal.current = null;
      anchor.current = null;
      if (node) {
        el.scrollTop = Math.max(0, node.offsetTop - el.clientHeight / 2);
      }
      return;
    }
    const pending = anchor.current;
    if (pending && (lines.length === 0 || lines[0].id !== pending.firstId)) {
      const node = el.querySelector<HTMLElement>(`[data-line-id="${pending.firstId}"]`);
      if (node) {
        el.scrollTop = node.offsetTop - pending.offset;
      }
      anchor.current = null;
    } else if (!pending && tail.following) {
      el.scrollTop = el.scrollHeight;
    }
  });

  const onScroll = (): void => {
    const el = ref.current;
    if (!el) {
      return;
    }
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
    tail.setFollowing(atBottom);
    if (
      el.scrollTop < 24 &&
      !filtering &&
      tail.hasOlder &&
      !tail.loading &&
      !anchor.current &&
      reveal.current === null &&
      lines.length
    ) {
      const node = el.querySelector<HTMLElement>(`[data-line-id="${lines[0].id}"]`);
      anchor.current = { firstId: lines[0].id, offset: (node?.offsetTop ?? 0) - el.scrollTop };
      void tail.loadOlder().then(() => {
        if (anchor.current && lines.length && tail.lines[0]?.id === anchor.current.firstId) {
          anchor.current = null; // nothing was added
        }
      });
    }
  };

  /** Scroll to a line (and stop following the end, so it stays in view). */
  const goTo = (id: number | null): void => {
    if (id === null) {
      return;
    }
    tail.setFollowing(false);
    reveal.current = id;
  };

  const onSearch = (value: string): void => {
    setSearch(value);
    setCurrent(0);
    goTo(matchIds(rendered, value.trim().toLowerCase())[0] ?? null);
  };

  const step = (by: number): void => {
    if (!matches.length) {
      return;
    }
    const next = (index + by + matches.length) % matches.length;
    setCurrent(next);
    goTo(matches[next]);
  };

  const jumpToError = async (): Promise<void> => {
    setNote(null);
    // The first error may lie before the window: read the whole log first.
    if (tail.hasOlder && !tail.complete) {
      await tail.loadAll();
    }
    const line = firstErrorLine(tail.lines);
    setErrorId(line ? line.id : null);
    if (line) {
      goTo(line.id);
    } else {
      setNote('No line looks like an error.');
    }
  };

  const download = async (): Promise<void> => {
    setNote(null);
    setDownloading(true);
    try {
      const all = await tail.readAll();
      const name = `${tail.jobId}${tail.attempt !== null ? `-attempt-${tail.attempt}` : ''}.log`;
      saveText(name, logFileText(all));
    } catch (error) {
      setNote(`Could not download the log: ${errorText(error)}`);
    } finally {
      setDownloading(false);
    }
  };

  let previousAttempt: number | null = null;
  return (
    <section className="trainorch-log-section">
      <div className="trainorch-section-title">
        Log{tail.attempt !== null ? ` #${tail.attempt}` : ''}
        <span className="trainorch-muted trainorch-log-status">
          {tail.loading && lines.length === 0
            ? 'loading…'
            : tail.finished && tail.atEnd
              ? 'ended'
              : tail.following
                ? 'following'
                : 'paused'}
        </span>
        {props.switcher}
      </div>
      <div className="trainorch-log-toolbar" role="toolbar" aria-label="Log tools">
        <input
          type="search"
          className="trainorch-log-search"
          data-action="log-search"
          placeholder="Search the log"
          aria-label="Search the log"
          title={
            tail.hasOlder
              ? 'Searches the lines loaded; "load all" first to search the whole log. Enter: next match, Shift+Enter: previous.'
              : 'Enter: next match, Shift+Enter: previous.'
          }
          value={search}
          onChange={event => onSearch(event.target.value)}
          onKeyDown={event => {
            if (event.key === 'Enter') {
              event.preventDefault();
              step(event.shiftKey ? -1 : 1);
            } else if (event.key === 'Escape') {
              onSearch('');
            }
          }}
        />
        {needle && (
          <span className="trainorch-muted trainorch-log-count" data-field="search-count">
            {matches.length ? `${index + 1}/${matches.length}` : 'no match'}
          </span>
        )}
        <Button
          minimal
          small
          data-action="search-prev"
          title="Previous match (Shift+Enter)"
          disabled={!matches.length}
          onClick={() => step(-1)}
        >
          ‹
        </Button>
        <Button
          minimal
          small
          data-action="search-next"
          title="Next match (Enter)"
          disabled={!matches.length}
          onClick={() => step(1)}
        >
          ›
        </Button>
        <CheckboxOption
          className="trainorch-log-option"
          action="log-filter"
          label="only matches"
          title="Show only the lines that match the search"
          checked={onlyMatches}
          onChange={setOnlyMatches}
        />
        <CheckboxOption
          className="trainorch-log-option"
          action="log-wrap"
          label="wrap"
          title="Wrap long lines"
          checked={wrap}
          onChange={setWrap}
        />
        <Button
          minimal
          small
          data-action="log-first-error"
          title="Jump to the first line containing Traceback, Error, Exception or FAILED (case-sensitive); reads the whole log when it is long"
          disabled={tail.loading}
          onClick={() => void jumpToError()}
        >
          first error
        </Button>
        {tail.hasOlder && !tail.complete && (
          <Button
            minimal
            small
            data-action="log-load-all"
            title="Load the whole log instead of older lines a chunk at a time"
            disabled={tail.loading}
            onClick={() => void tail.loadAll()}
          >
            load all
          </Button>
        )}
        <Button
          minimal
          small
          data-action="log-download"
          title={`Save the whole log${tail.attempt !== null ? ` of attempt ${tail.attempt}` : ''} as a text file`}
          disabled={downloading}
          onClick={() => void download()}
        >
          {downloading ? 'downloading…' : 'download'}
        </Button>
      </div>
      {tail.error && <div className="trainorch-error">{tail.error}</div>}
      {note && (
        <div className="trainorch-muted trainorch-log-note" data-field="log-note">
          {note}
        </div>
      )}
      <div
        className={`trainorch-log${wrap ? '' : ' trainorch-log-nowrap'}`}
        ref={ref}
        onScroll={onScroll}
        tabIndex={0}
        aria-label="Job log"
      >
        {tail.hasOlder && !filtering && (
          <div className="trainorch-log-more">scroll up for older lines</div>
        )}
        {lines.length === 0 && !tail.loading && (
          <div className="trainorch-log-empty">No output yet.</div>
        )}
        {filtering && !matches.length && lines.length > 0 && (
          <div className="trainorch-log-empty">No line matches.</div>
        )}
        {rendered.map(({ line, html }) => {
          const first = previousAttempt !== null && line.attempt !== previousAttempt;
          previousAttempt = line.attempt;
          const match = matchSet.has(line.id);
          if (filtering && !match) {
            return null;
          }
          const classes = ['trainorch-log-line'];
          if (first) {
            classes.push('trainorch-log-line-attempt');
          }
          if (match) {
            classes.push('trainorch-log-match');
          }
          if (line.id === currentId) {
            classes.push('trainorch-log-match-current');
          }
          if (line.id === errorId) {
            classes.push('trainorch-log-error-line');
          }
          return (
            <div
              key={line.id}
              className={classes.join(' ')}
              data-line-id={line.id}
              data-stream={line.stream}
              data-attempt={line.attempt}
              title={first ? `attempt ${line.attempt}` : undefined}
              // ansi_up escapes the job's text (escape_html is on) and adds only its own spans.
              dangerouslySetInnerHTML={{ __html: html }}
            />
          );
        })}
      </div>
      {!tail.atEnd && !tail.loading && (
        <Button
          minimal
          small
          className="trainorch-log-follow"
          data-action="follow"
          onClick={() => {
            tail.setFollowing(true);
            const el = ref.current;
            if (el) {
              el.scrollTop = el.scrollHeight;
            }
          }}
        >
          newer lines — follow
        </Button>
      )}
    </section>
  );
}

function Spec(props: { job: IJob }): JSX.Element {
  const spec = props.job.spec;
  const params = Object.entries(spec?.params ?? props.job.params ?? {});
  const { source, command, ...rest }: Partial<IJobSpec> = spec ?? {};
  return (
    <section className="trainorch-spec-section">
      <div className="trainorch-section-title">Params</div>
      {params.length === 0 ? (
        <div className="trainorch-muted">No params.</div>
      ) : (
        <dl className="trainorch-summary trainorch-params">
          {params.map(([key, value]) => (
            <Field key={key} label={key}>
              {typeof value === 'string' ? value : JSON.stringify(value)}
            </Field>
          ))}
        </dl>
      )}
      {command && (
        <details className="trainorch-details" open>
          <summary>Command</summary>
          <pre className="trainorch-code">{command}</pre>
        </details>
      )}
      {source && (
        <details className="trainorch-details">
          <summary>Source</summary>
          <pre className="trainorch-code">{source}</pre>
        </details>
      )}
      {spec && (
        <details className="trainorch-details trainorch-spec">
          <summary>Rendered spec</summary>
          <pre className="trainorch-code">{JSON.stringify(rest, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}
