/**
 * The REST API's JSON shapes (jupyter_trainorch/store/models.py, api/handlers.py).
 */

export type JobState =
  | 'pending'
  | 'queued'
  | 'starting'
  | 'running'
  | 'retrying'
  | 'preempted'
  | 'succeeded'
  | 'failed'
  | 'cancelled';

export const JOB_STATES: JobState[] = [
  'pending',
  'queued',
  'starting',
  'running',
  'retrying',
  'preempted',
  'succeeded',
  'failed',
  'cancelled'
];

export const TERMINAL_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/** The non-terminal states, sent as one comma-separated `state` filter. */
export const ACTIVE_STATES: JobState[] = JOB_STATES.filter(s => !TERMINAL_STATES.has(s));

export const PRIORITY_CLASSES = ['low', 'normal', 'high', 'urgent'] as const;
export type PriorityClass = (typeof PRIORITY_CLASSES)[number];

/** What the caller may do with a job now (`actions` of the job JSON). */
export type JobAction = 'read' | 'rerun' | 'cancel' | 'retry' | 'set_priority';

export interface IAttempt {
  n: number;
  state: string;
  worker: string | null;
  gpu_ids: string[];
  started: string | null;
  ended: string | null;
  exit_code: number | null;
  error: string | null;
  /** Lost to the infrastructure (a worker died, the service stopped), not the job's failure. */
  infrastructure?: boolean;
  mlflow_run_id?: string | null;
  /** When the job's process was spawned on the worker; null before. */
  process_started?: string | null;
  pid?: number | null;
}

export interface IProgress {
  step: number | null;
  total: number | null;
  fraction: number | null;
  message: string | null;
  metrics?: Record<string, unknown>;
  /** Server time of the last report: epoch seconds, or ISO text. */
  updated?: number | string | null;
}

export interface IResources {
  gpus: number;
  cpus: number;
  memory: number;
}

/** What every caller sees of a job: the fields of the queue view. */
export interface IJobBase {
  id: string;
  name: string;
  user: string;
  state: JobState;
  priority: number;
  priority_class: string;
  resources: IResources;
  created: string | null;
  started: string | null;
  ended: string | null;
  terminal: boolean;
  /** For a waiting job: 1 is dispatched next. Absent otherwise. */
  queue_position?: number | null;
  /** What the caller may do with it now. */
  actions: JobAction[];
}

/** Another user's job: the queue view only, no logs, progress, params or attempts. */
export interface IRestrictedJob extends IJobBase {
  restricted: true;
}

/** A job the caller may read: the whole job JSON. */
export interface IJob extends IJobBase {
  restricted?: false;
  kind: string;
  depends_on: string[];
  template: { name?: string; version?: number; hash?: string };
  params: Record<string, unknown>;
  attempts: IAttempt[];
  max_retries: number;
  /** max_retries + 1. */
  attempts_allowed: number;
  /**
   * How often the job's code had started and had to run again because a worker was
   * lost or the service stopped (not the job's own failure).
   */
  reexecutions: number;
  timeout: number | null;
  progress: IProgress;
  mlflow: IMlflowInfo;
  error: string | null;
  outputs: string[];
  has_outputs: boolean;
  /** Sweep group id, or empty. */
  group?: string;
  code_hash?: string | null;
  rerun_of?: string | null;
  experiment?: string | null;
}

export interface IMlflowInfo {
  experiment_id: string | null;
  run_id: string | null;
  url: string | null;
  warning?: string | null;
  /** Last value of each logged metric. */
  metrics?: Record<string, number>;
  model?: { name: string; version: string | number; alias?: string | null } | null;
}

/** One point of a metric history: step, value, time in ms. */
export type MetricPoint = [number, number, number];

export interface IAttemptMetrics {
  n: number;
  run_id: string | null;
  metrics: Record<string, MetricPoint[]>;
}

/** `GET jobs/{id}/metrics`. */
export interface IMetricHistory {
  job_id?: string;
  attempts: IAttemptMetrics[];
  warning?: string;
}

export interface IJobSpec {
  name: string;
  kind: string;
  source: string;
  command: string;
  params: Record<string, unknown>;
  resources: { gpus: number; cpus: number; memory: number };
  retries: { max: number; backoff?: number; factor?: number; max_backoff?: number };
  timeout: number | null;
  priority: number;
  env: Record<string, string>;
  depends_on: string[];
  outputs: string[];
  workdir: string | null;
  template: { name?: string; version?: number; hash?: string };
  user: string;
}

export interface IJobDetail extends IJob {
  spec: IJobSpec;
}

/** A row of the list: a whole job, or another user's job as a queue row. */
export type IJobRow = IJob | IRestrictedJob;

/** `GET jobs/{id}`. */
export type IJobView = IJobDetail | IRestrictedJob;

export function isRestricted(job: IJobBase): job is IRestrictedJob {
  return (job as IRestrictedJob).restricted === true;
}

/** Whether the caller may do `action` with the job now. */
export function may(job: IJobBase, action: JobAction): boolean {
  return job.actions.includes(action);
}

export interface IJobList {
  jobs: IJobRow[];
  total: number;
  limit: number;
  offset: number;
}

export interface ILogLine {
  id: number;
  attempt: number;
  seq: number;
  stream: string;
  text: string;
  time: string | null;
}

export interface ILogPage {
  lines: ILogLine[];
  next: number;
  state: JobState;
  finished: boolean;
}

export interface IWorker {
  address: string;
  name: string | null;
  gpus: string[];
  free_gpus: string[];
  cpus: number;
  free_cpus: number;
  memory: number;
  running: string[];
}

export interface ICluster {
  kind?: string;
  address?: string;
  dashboard?: string | null;
  workers: IWorker[];
  gpus: { total: number; busy: number };
  queue_depth: number;
  running: number;
  waiting_on_dependencies: number;
}

/** `GET me`: who the authenticated user is and what they may do. */
export interface IMe {
  name: string;
  admin: boolean;
  mode: 'single-user' | 'hub';
  /** How other users' jobs are shown to this user. */
  others_jobs: 'queue' | 'hidden' | 'all';
  may: {
    submit: boolean;
    act_on_others_jobs: boolean;
    see_others_jobs: boolean;
    stop_service: boolean;
  };
}

/** One message of the push channel (`events/ws`, `GET events`). */
export interface IChange {
  seq: number;
  kind: 'job' | 'logs' | 'progress' | string;
  job_id: string;
  /** The job's owner. */
  user?: string;
  /** Server time, epoch seconds. */
  time: number;
  state?: JobState;
  priority?: number;
  progress?: IProgress;
  attempt?: number;
  lines?: number;
}

/** `GET events?after=&timeout=`. */
export interface IChangePage {
  changes: IChange[];
  last: number;
  /** `after` was from an earlier run of the service: re-read everything shown. */
  reset?: boolean;
}
