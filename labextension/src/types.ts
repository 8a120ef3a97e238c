/**
 * The REST API's JSON shapes: names for the types of `openapi.ts`, which `jlpm build:types`
 * generates from jupyter_trainorch/api/openapi.json (the contract's pydantic models). No
 * field is listed here; tests/test_typescript_types.py fails while `openapi.ts` is stale.
 */
import { components, jobStateValues } from './openapi';

type Schemas = components['schemas'];

export type JobState = Schemas['JobState'];
/** A job as its owner (or an admin) sees it; `spec` only from `GET jobs/{id}`. */
export type IJob = Schemas['Job'];
/** Another user's job: the queue view only, no logs, progress, params or attempts. */
export type IQueueRow = Schemas['QueueRow'];
export type IJobList = Schemas['JobList'];
/** A row of the list: a whole job, or another user's job as a queue row. */
export type IJobRow = IJobList['jobs'][number];
/**
 * `GET jobs/{id}`: another user's job comes as a queue row here too (the document names
 * only `Job` for this answer).
 */
export type IJobView = IJobRow;
export type IJobSpec = Schemas['JobSpec-Output'];
export type IAttempt = Schemas['Attempt'];
export type IProgress = Schemas['Progress'];
export type ILogLine = Schemas['LogLine'];
export type ILogPage = Schemas['LogPage'];
export type ICluster = Schemas['Cluster'];
export type IWorker = Schemas['Worker'];
export type IMe = Schemas['Me'];
export type IQuota = Schemas['Quota'];

/** Whether an admin set the user a limit, or one of their groups. */
export function hasQuota(me: IMe): boolean {
  const quota = me.quota;
  return quota.gpus !== null || quota.queued !== null || quota.groups.length > 0;
}
/** One message of the push channel (`events/ws`, `GET events`). */
export type IChange = Schemas['Change'];
export type IChangePage = Schemas['ChangePage'];
export type IServiceStatus = Schemas['ServiceStatus'];
export type ITemplate = Schemas['Template'];
export type ITemplateList = Schemas['TemplateList'];
/** `GET jobs/{id}/metrics`. */
export type IMetricHistory = Schemas['MetricHistory'];
export type IAttemptMetrics = Schemas['AttemptMetrics'];
/** One point of a metric history: step, value, time in ms. */
export type MetricPoint = IAttemptMetrics['metrics'][string][number];
/** What the caller may do with a job now (`actions` of the job JSON). */
export type JobAction = IJob['actions'][number];

// -- states ------------------------------------------------------------------------------

type StateGroup = 'waiting' | 'active' | 'terminal';

/**
 * Where each state stands, as jupyter_trainorch/contract/states.py groups them
 * (tests/test_typescript_types.py holds the two to agreement); a state the contract adds
 * does not compile here until it is placed. Every list of states below comes from this.
 */
const STATE_GROUPS: Record<JobState, StateGroup> = {
  pending: 'waiting',
  queued: 'waiting',
  starting: 'active',
  running: 'active',
  retrying: 'waiting',
  preempted: 'waiting',
  succeeded: 'terminal',
  failed: 'terminal',
  cancelled: 'terminal'
};

/** Every state, in the contract's order. */
export const JOB_STATES: readonly JobState[] = jobStateValues;

function statesOf(group: StateGroup): ReadonlySet<JobState> {
  return new Set(JOB_STATES.filter(state => STATE_GROUPS[state] === group));
}

/** Ended for good: succeeded, failed or cancelled. */
export const TERMINAL_STATES = statesOf('terminal');
/** Holding a worker: an attempt is starting or running. */
export const ACTIVE_STATES = statesOf('active');
/** Not yet holding a worker, and not ended. */
export const WAITING_STATES = statesOf('waiting');
/** Not ended (waiting or active): the list's `active` filter, sent as one `state` value. */
export const UNFINISHED_STATES: readonly JobState[] = JOB_STATES.filter(
  state => STATE_GROUPS[state] !== 'terminal'
);

/**
 * Whether a state is terminal, for what names only a state (a change of the feed). A job
 * says so itself: use `job.terminal`.
 */
export function isTerminalState(state: JobState): boolean {
  return STATE_GROUPS[state] === 'terminal';
}

// -- jobs --------------------------------------------------------------------------------

export const PRIORITY_CLASSES = ['low', 'normal', 'high', 'urgent'] as const;

export function isRestricted(job: IJobRow): job is IQueueRow {
  return (job as IQueueRow).restricted === true;
}

/** Whether the caller may do `action` with the job now. */
export function may(job: IJobRow, action: JobAction): boolean {
  return job.actions.includes(action);
}
