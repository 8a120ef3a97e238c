/**
 * JobDetailModel: one job as its detail shows it (the sidebar's preview, or a main-area
 * tab): the job read with its spec, its log (when the user may read it) and its metric
 * histories, kept current by the changes that name the job.
 */
import { IDisposable } from '@lumino/disposable';
import { Throttler } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient, errorMessage } from './api';
import { changeExtra } from './changes';
import { LogTail } from './logs';
import { IChange, IJobView, IMetricHistory, IProgress, isRestricted, may } from './types';

/** Metric histories are read from MLflow, which is slow: at most this often per running job. */
const METRICS_MS = 5000;
/** Changes that name the job are folded into one read of it. */
const DETAIL_DELAY_MS = 200;

export class JobDetailModel implements IDisposable {
  constructor(options: JobDetailModel.IOptions) {
    this.jobId = options.jobId;
    this._client = options.client;
    this._logLines = options.logLines ?? 500;
    this._job = options.job && options.job.id === options.jobId ? options.job : null;
  }

  readonly jobId: string;

  /** The job, the log shown (not its lines: see `LogTail.changed`) or the metrics changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The job; another user's job only as its queue view; null until read. */
  get job(): IJobView | null {
    return this._job;
  }

  get error(): string | null {
    return this._error;
  }

  get logTail(): LogTail | null {
    return this._logTail;
  }

  /** Metric histories (read from MLflow, then extended by live progress). */
  get metrics(): IMetricHistory | null {
    return this._metrics;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Read the job, and open its log and metrics when the user may read them. */
  start(): void {
    if (this._job) {
      this._openReadParts(this._job);
    }
    void this.load();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._soon.dispose();
    window.clearTimeout(this._metricsTimer);
    this._logTail?.dispose();
    Signal.clearData(this);
  }

  async load(): Promise<void> {
    try {
      const job = await this._client.getJob(this.jobId);
      if (this._disposed) {
        return;
      }
      const previous = this._job;
      this._job = job;
      this._error = null;
      const opened = this._openReadParts(job);
      if (!opened && previous && !isRestricted(previous) && !isRestricted(job)) {
        if (!previous.terminal && job.terminal) {
          // The last points logged before the end may not have come through progress.
          void this._loadMetrics();
        }
        if (previous.attempts.length !== job.attempts.length) {
          void this._logTail?.fetchNewer();
        }
      }
    } catch (error) {
      if (this._disposed) {
        return;
      }
      if (this._client.unavailable === null) {
        this._error = errorMessage(error);
      }
    }
    this._changed.emit();
  }

  /** Show one attempt's log, or null for all attempts. */
  selectAttempt(attempt: number | null): void {
    if (!this._logTail || this._logTail.attempt === attempt) {
      return;
    }
    this._setLogTail(this._newLogTail(attempt));
    this._changed.emit();
  }

  /** An action answered with the job: show it at once. */
  put(job: IJobView): void {
    if (job.id !== this.jobId || this._disposed) {
      return;
    }
    this._job = job;
    this._openReadParts(job);
    this._changed.emit();
  }

  /** The changes of a batch that name this job. */
  applyChanges(changes: readonly IChange[]): void {
    let changed = false;
    for (const change of changes) {
      if (change.job_id !== this.jobId) {
        continue;
      }
      const extra = changeExtra(change);
      if (change.kind === 'progress' && extra.progress) {
        if (this._job && !isRestricted(this._job)) {
          this._job = { ...this._job, progress: extra.progress };
          this._appendLive(extra.progress, extra.attempt);
          this._scheduleMetrics();
          changed = true;
        }
      } else if (change.kind === 'logs') {
        const tail = this._logTail;
        if (tail && (tail.attempt === null || tail.attempt === extra.attempt)) {
          void tail.fetchNewer();
        }
      } else if (change.kind === 'job') {
        void this._soon.invoke().catch(() => undefined);
      }
    }
    if (changed) {
      this._changed.emit();
    }
  }

  /** Read everything again (the service restarted, or came back). */
  resync(): void {
    void this._soon.invoke().catch(() => undefined);
    void this._logTail?.fetchNewer();
    if (this._logTail) {
      void this._loadMetrics();
    }
  }

  /**
   * Open the log and metrics when the user may read the job (not another user's job).
   * Returns whether they were opened just now.
   */
  private _openReadParts(job: IJobView): boolean {
    if (this._logTail || !may(job, 'read')) {
      return false;
    }
    this._setLogTail(this._newLogTail(null));
    void this._loadMetrics();
    return true;
  }

  private _newLogTail(attempt: number | null): LogTail {
    return new LogTail({
      jobId: this.jobId,
      attempt,
      maxLines: this._logLines,
      fetch: after => this._client.logs(this.jobId, attempt, after)
    });
  }

  private _setLogTail(tail: LogTail | null): void {
    this._logTail?.dispose();
    this._logTail = tail;
    if (tail) {
      void tail.start();
    }
  }

  private async _loadMetrics(): Promise<void> {
    this._lastMetricsRead = Date.now();
    let history: IMetricHistory;
    try {
      history = await this._client.metrics(this.jobId);
    } catch (error) {
      // Without MLflow histories the chart still grows from live progress.
      history = { job_id: this.jobId, attempts: [], warning: errorMessage(error) };
    }
    if (this._disposed) {
      return;
    }
    if (!Array.isArray(history.attempts)) {
      history = { ...history, attempts: [] };
    }
    // Keep live points newer than the history: MLflow lags behind progress reports.
    for (const attempt of this._metrics?.attempts ?? []) {
      let target = history.attempts.find(a => a.n === attempt.n);
      if (!target) {
        target = { n: attempt.n, run_id: null, metrics: {} };
        history.attempts.push(target);
      }
      for (const [key, points] of Object.entries(attempt.metrics)) {
        const known = target.metrics[key] ?? [];
        const last = known.length ? known[known.length - 1][0] : -Infinity;
        target.metrics[key] = known.concat(points.filter(p => p[0] > last));
      }
    }
    this._metrics = history;
    this._changed.emit();
  }

  /** Re-read the histories of a running job, at most every METRICS_MS. */
  private _scheduleMetrics(): void {
    if (this._metricsTimer) {
      return;
    }
    const wait = Math.max(0, this._lastMetricsRead + METRICS_MS - Date.now());
    this._metricsTimer = window.setTimeout(() => {
      this._metricsTimer = 0;
      void this._loadMetrics();
    }, wait);
  }

  /** Add the latest reported values to the open chart. */
  private _appendLive(progress: IProgress, attemptN?: number): void {
    const values = progress.metrics;
    const step = progress.step;
    const job = this._job && !isRestricted(this._job) ? this._job : null;
    if (!values || typeof step !== 'number' || !job) {
      return;
    }
    const n = attemptN ?? (job.attempts.length ? job.attempts[job.attempts.length - 1].n : 1);
    const history: IMetricHistory = this._metrics ?? { job_id: job.id, attempts: [] };
    let attempt = history.attempts.find(a => a.n === n);
    if (!attempt) {
      attempt = { n, run_id: null, metrics: {} };
      history.attempts = [...history.attempts, attempt];
    }
    const now = Date.now();
    for (const [key, value] of Object.entries(values)) {
      if (typeof value !== 'number' || !Number.isFinite(value)) {
        continue;
      }
      const points = attempt.metrics[key] ?? [];
      if (points.length && points[points.length - 1][0] >= step) {
        continue;
      }
      attempt.metrics[key] = [...points, [step, value, now]];
    }
    this._metrics = { ...history };
  }

  private _client: TrainorchClient;
  private _logLines: number;
  private _job: IJobView | null;
  private _error: string | null = null;
  private _logTail: LogTail | null = null;
  private _metrics: IMetricHistory | null = null;
  // Not awaited: a throttler drops calls while its function runs, and a change that comes
  // during a read must still bring another one.
  private _soon = new Throttler(() => void this.load(), {
    limit: DETAIL_DELAY_MS,
    edge: 'trailing'
  });
  private _metricsTimer = 0;
  private _lastMetricsRead = 0;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}

export namespace JobDetailModel {
  export interface IOptions {
    jobId: string;
    client: TrainorchClient;
    /** The job as the list shows it, to show while its detail is read. */
    job?: IJobView | null;
    /** Lines the log window keeps (the preview needs a few, a tab many). */
    logLines?: number;
  }
}
