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

/** States whose priority the server lets change (409 otherwise). */
export const REPRIORITISABLE_STATES: ReadonlySet<string> = new Set([
  'pending',
  'queued',
  'retrying'
]);

/** The non-terminal states, sent as one comma-separated `state` filter. */
export const ACTIVE_STATES: JobState[] = JOB_STATES.filter(s => !TERMINAL_STATES.has(s));

export const PRIORITY_CLASSES = ['low', 'normal', 'high', 'urgent'] as const;
export type PriorityClass = (typeof PRIORITY_CLASSES)[number];

export interface IAttempt {
  n: number;
  state: string;
  worker: string | null;
  gpu_ids: string[];
  started: string | null;
  ended: string | null;
  exit_code: number | null;
  error: string | null;
  infrastructure?: boolean;
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

export interface IJob {
  id: string;
  name: string;
  user: string;
  state: JobState;
  priority: number;
  priority_class: string;
  kind: string;
  resources: { gpus: number; cpus: number; memory: number };
  depends_on: string[];
  template: { name?: string; version?: number; hash?: string };
  params: Record<string, unknown>;
  attempts: IAttempt[];
  max_retries: number;
  timeout: number | null;
  progress: IProgress;
  mlflow: IMlflowInfo;
  error: string | null;
  outputs: string[];
  has_outputs: boolean;
  created: string | null;
  started: string | null;
  ended: string | null;
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

export interface IJobList {
  jobs: IJob[];
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

/** One message of the push channel (`events/ws`). */
export interface IChange {
  seq: number;
  kind: 'job' | 'logs' | 'progress' | string;
  job_id: string;
  /** Server time, epoch seconds. */
  time: number;
  state?: JobState;
  priority?: number;
  progress?: IProgress;
  attempt?: number;
  lines?: number;
}
