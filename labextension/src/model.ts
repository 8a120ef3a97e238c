/**
 * JobsModel: everything the panel knows, and how it learns it.
 *
 * State arrives through the push channel (`events/ws`); each change either patches
 * what is shown (progress, state) or schedules a coalesced re-read of the current
 * page. When the socket cannot be opened, the model polls the change feed and the
 * list instead, backing off while nothing changes and not at all while the panel is
 * hidden. When the trainorch service is away (restarting), reads back off until it
 * answers again; then the socket reopens and everything shown is read again, as it
 * is whenever the service's change numbering shows that it restarted.
 *
 * Views read the getters and listen to the signals; they never fetch by themselves.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { toSeconds } from './format';
import { LogTail } from './logs';
import { API_PATH, isUnavailable, query, requestAPI } from './request';
import {
  IChange,
  IChangePage,
  ICluster,
  IJob,
  IJobList,
  IJobRow,
  IJobView,
  IMe,
  IMetricHistory,
  IProgress,
  JobState,
  UNFINISHED_STATES,
  isRestricted,
  isTerminalState,
  may
} from './types';

export type SortKey = 'submitted' | 'priority';

export interface IQuery {
  /** `all`, `active` or one job state. */
  state: string;
  /** Empty for every user. */
  user: string;
  /** Case-insensitive text matched against job names and ids. */
  search: string;
  sort: SortKey;
  /** Zero-based page. */
  page: number;
}

/**
 * How changes reach the panel: `reconnecting` while the service does not answer (it
 * restarts, or the live channel just closed) and reads are retried with backoff.
 */
export type Connection = 'connecting' | 'live' | 'polling' | 'reconnecting';

/** A job of interest that reached a state worth telling the user about. */
export interface IJobNotice {
  job: IJob;
  state: Extract<JobState, 'succeeded' | 'failed' | 'cancelled' | 'retrying'>;
  /** Whether the job was submitted or acted on from this browser (see `JobsModel.watch`). */
  fromHere: boolean;
}

/**
 * Which of the user's jobs raise a notification when they end (the `notify` setting):
 * - `failures-and-mine`: failures of any of the user's jobs, plus every end (and retry) of
 *   the jobs submitted or acted on from this browser;
 * - `all-mine`: every end of any of the user's jobs (and retries of those from here);
 * - `none`: no notification.
 * Other users' jobs never notify, whatever the mode (an admin included).
 */
export type NotifyMode = 'failures-and-mine' | 'all-mine' | 'none';

export const NOTIFY_MODES: readonly NotifyMode[] = ['failures-and-mine', 'all-mine', 'none'];

/** The API's own cap on `limit`. */
const MAX_LIMIT = 1000;
/** The first socket carries only changes from now on; the list read that follows covers the past. */
const LIVE_ONLY = Number.MAX_SAFE_INTEGER;
const CLUSTER_MS = 15000;
/** Retrying a service that does not answer: from this delay, doubling up to the cap. */
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 15000;
/** The socket's own reconnection backoff cap (a successful read reopens it at once). */
const SOCKET_MAX_MS = 30000;
/** A job whose creation is this close to its first change is a new submission. */
const NEW_JOB_S = 10;
/** How long after a `%%train` cell runs its job is expected to appear. */
const EXPECT_MS = 60000;
/** Metric histories are read from MLflow, which is slow: at most this often per running job. */
const METRICS_MS = 5000;

export class JobsModel implements IDisposable {
  constructor(options: JobsModel.IOptions = {}) {
    this._serverSettings = options.serverSettings ?? ServerConnection.makeSettings();
    this.pageSize = options.pageSize ?? 100;
    this._refreshInterval = Math.max(1, options.refreshInterval ?? 5);
    this._query = {
      state: options.stateFilter ?? 'all',
      user: '',
      search: '',
      sort: 'submitted',
      page: 0
    };
    document.addEventListener('visibilitychange', this._onVisibility);
  }

  readonly pageSize: number;

  // -- signals ---------------------------------------------------------------------

  /** The page of jobs, its total or the query changed. */

  /** The Dask dashboard, through this server (see the server's `trainorch/dashboard`). */
  get dashboardUrl(): string {
    return URLExt.join(this._serverSettings.baseUrl, 'trainorch/dashboard');
  }
  get listChanged(): ISignal<this, void> {
    return this._listChanged;
  }

  get clusterChanged(): ISignal<this, void> {
    return this._clusterChanged;
  }

  /** The selected job, its detail or its log tail changed. */
  get detailChanged(): ISignal<this, void> {
    return this._detailChanged;
  }

  get connectionChanged(): ISignal<this, Connection> {
    return this._connectionChanged;
  }

  /** The compared jobs or their metric histories changed. */
  get compareChanged(): ISignal<this, void> {
    return this._compareChanged;
  }

  /** One of the user's own jobs, submitted or acted on from here, ended or is being retried. */
  get notice(): ISignal<this, IJobNotice> {
    return this._notice;
  }

  // -- state -------------------------------------------------------------------------

  get jobs(): readonly IJobRow[] {
    return this._jobs;
  }

  get total(): number {
    return this._total;
  }

  get pageCount(): number {
    return Math.max(1, Math.ceil(this._total / this.pageSize));
  }

  /** True when a search or priority sort only covers the newest MAX_LIMIT jobs. */
  get capped(): boolean {
    return this._capped;
  }

  get query(): Readonly<IQuery> {
    return this._query;
  }

  get loading(): boolean {
    return this._listBusy;
  }

  get error(): string | null {
    return this._error;
  }

  get cluster(): ICluster | null {
    return this._cluster;
  }

  get connection(): Connection {
    return this._connection;
  }

  /** Why the service is being reconnected to (its last answer), or null while it answers. */
  get unavailable(): string | null {
    return this._unavailable;
  }

  get selectedId(): string | null {
    return this._selectedId;
  }

  /** The selected job; another user's job only as its queue view. */
  get detail(): IJobView | null {
    return this._detail;
  }

  get detailError(): string | null {
    return this._detailError;
  }

  get logTail(): LogTail | null {
    return this._logTail;
  }

  /** Metric histories of the selected job (fetched, then extended by live progress). */
  get metrics(): IMetricHistory | null {
    return this._metrics;
  }

  /** Ids ticked in the list for comparison. */
  get checked(): ReadonlySet<string> {
    return this._checked;
  }

  get compareJobs(): readonly IJob[] {
    return this._compareJobs;
  }

  get compareMetrics(): Readonly<Record<string, IMetricHistory>> {
    return this._compareMetrics;
  }

  get compareLoading(): boolean {
    return this._compareLoading;
  }

  get compareError(): string | null {
    return this._compareError;
  }

  /** Who the authenticated user is (`GET me`), once known. */
  get me(): IMe | null {
    return this._me;
  }

  /** The authenticated user's name, or empty until it is known. */
  get mineUser(): string {
    return this._me?.name ?? '';
  }

  get visible(): boolean {
    return this._visible && document.visibilityState !== 'hidden';
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Server time in epoch seconds, corrected by the clock skew seen on the socket. */
  serverNow(): number {
    return Date.now() / 1000 + (this._clockOffset ?? 0);
  }

  // -- life cycle --------------------------------------------------------------------

  /** Open the push channel and read the first page. */
  start(): void {
    if (this._started || this._disposed) {
      return;
    }
    this._started = true;
    this._connect();
    void this._loadMe();
    void this.refresh();
    // Workers come and go without job changes (adaptive scaling): re-read the strip now and then.
    this._clusterInterval = window.setInterval(() => {
      if (this.visible) {
        this._scheduleCluster();
      }
    }, CLUSTER_MS);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    document.removeEventListener('visibilitychange', this._onVisibility);
    window.clearInterval(this._clusterInterval);
    this._clearTimer('_refreshTimer');
    this._clearTimer('_pollTimer');
    this._clearTimer('_reconnectTimer');
    this._clearTimer('_detailTimer');
    this._clearTimer('_clusterTimer');
    this._clearTimer('_metricsTimer');
    if (this._socket) {
      this._socket.onclose = null;
      this._socket.close();
      this._socket = null;
    }
    this._logTail?.dispose();
    Signal.clearData(this);
  }

  /** The panel tells the model whether anyone can see it. */
  setVisible(visible: boolean): void {
    if (this._visible === visible) {
      return;
    }
    this._visible = visible;
    this._visibilityChanged();
  }

  setRefreshInterval(seconds: number): void {
    this._refreshInterval = Math.max(1, seconds || 5);
    if (this._unavailable === null) {
      // (While the service is away, the reconnection backoff keeps its pace.)
      this._pollDelay = this._refreshInterval * 1000;
      this._schedulePoll();
    }
  }

  // -- queries -----------------------------------------------------------------------

  setQuery(changes: Partial<IQuery>): void {
    const next = { ...this._query, ...changes };
    if (!('page' in changes)) {
      next.page = 0;
    }
    next.page = Math.max(0, next.page);
    if (JSON.stringify(next) === JSON.stringify(this._query)) {
      return;
    }
    this._query = next;
    this._listChanged.emit();
    void this.refresh();
  }

  /**
   * Re-read the current page and the cluster; calls made meanwhile share one more
   * read. Resolves to whether the list could be read (the error is in `error`).
   */
  async refresh(): Promise<boolean> {
    this._clearTimer('_refreshTimer');
    if (this._listPromise) {
      this._listAgain = true;
      return this._listPromise;
    }
    this._listBusy = true;
    this._listPromise = this._refreshLoop();
    try {
      return await this._listPromise;
    } finally {
      this._listBusy = false;
      this._listPromise = null;
    }
  }

  // -- selection ---------------------------------------------------------------------

  /**
   * Show one job's detail (null closes it), with its log and metrics when the user may
   * read them: at once for a job of the list, else once its detail says so.
   */
  select(id: string | null): void {
    if (id === this._selectedId) {
      return;
    }
    const known = id ? this.findJob(id) : null;
    this._selectedId = id;
    this._detail = null;
    this._detailError = null;
    this._closeReadParts();
    if (known) {
      this._syncReadParts(known);
    }
    this._detailChanged.emit();
    this._listChanged.emit();
    if (id) {
      void this._loadDetail();
    }
  }

  // -- comparison --------------------------------------------------------------------

  setChecked(id: string, checked: boolean): void {
    if (this._checked.has(id) === checked) {
      return;
    }
    const next = new Set(this._checked);
    if (checked) {
      next.add(id);
    } else {
      next.delete(id);
    }
    this._checked = next;
    this._listChanged.emit();
  }

  clearChecked(): void {
    if (this._checked.size) {
      this._checked = new Set();
      this._listChanged.emit();
    }
  }

  /** Read the jobs to compare (the ticked ones unless given) and their metric histories. */
  async loadCompare(ids?: string[]): Promise<void> {
    const wanted = ids ?? (this._compareIds.length ? this._compareIds : [...this._checked]);
    if (ids) {
      this._checked = new Set(ids);
      this._listChanged.emit();
    }
    this._compareIds = wanted;
    this._compareLoading = true;
    this._compareError = null;
    this._compareChanged.emit();
    const token = ++this._compareToken;
    try {
      const jobs = (await Promise.all(wanted.map(id => this.getJob(id)))).map(job => {
        if (isRestricted(job)) {
          throw new Error(
            `Job ${job.id} belongs to ${job.user}: only its owner and admins see its metrics.`
          );
        }
        return job;
      });
      const histories = await Promise.all(
        wanted.map(id =>
          this._fetchMetrics(id).catch((): IMetricHistory => ({ job_id: id, attempts: [] }))
        )
      );
      if (token !== this._compareToken || this._disposed) {
        return;
      }
      this._compareJobs = jobs;
      this._compareMetrics = {};
      wanted.forEach((id, i) => {
        this._compareMetrics[id] = histories[i];
      });
    } catch (error) {
      if (token !== this._compareToken) {
        return;
      }
      this._compareError = (error as Error).message || String(error);
    }
    this._compareLoading = false;
    this._compareChanged.emit();
  }

  /** Show one attempt's log, or null for all attempts. */
  selectAttempt(attempt: number | null): void {
    if (
      !this._selectedId ||
      this._readPartsFor !== this._selectedId ||
      (this._logTail && this._logTail.attempt === attempt)
    ) {
      return;
    }
    this._setLogTail(this._newLogTail(this._selectedId, attempt));
    this._detailChanged.emit();
  }

  // -- actions -------------------------------------------------------------------------

  cancel(id: string): Promise<IJobView> {
    return this._act(id, '', { method: 'DELETE' });
  }

  retry(id: string): Promise<IJobView> {
    return this._act(id, '/retry', { method: 'POST' });
  }

  setPriority(id: string, priority: string): Promise<IJobView> {
    return this._act(id, '', { method: 'PATCH', body: JSON.stringify({ priority }) });
  }

  /** Submit the same job again; the new one is selected. */
  async rerun(id: string): Promise<IJobView> {
    const job = await this._request<IJobView>(`${this._jobPath(id)}/rerun`, { method: 'POST' });
    this._known.add(job.id);
    this.watch(job.id);
    this.select(job.id);
    this._scheduleRefresh();
    return job;
  }

  /** The job with its rendered spec (for clone-to-cell and the commands); others' as a queue row. */
  getJob(id: string): Promise<IJobView> {
    return this._request<IJobView>(this._jobPath(id));
  }

  /** A job found on the current page or in the detail view, without a request. */
  findJob(id: string): IJobRow | null {
    if (this._detail && this._detail.id === id) {
      return this._detail;
    }
    return this._jobs.find(job => job.id === id) ?? null;
  }

  /**
   * A `%%train` cell was run in this browser: the user's next new job is taken as
   * submitted from here (it is watched).
   */
  expectSubmission(): void {
    const now = Date.now();
    this._expected = this._expected.filter(t => now - t < EXPECT_MS);
    this._expected.push(now);
  }

  /** Which ends of the user's jobs are told about (the `notify` setting). */
  get notifyMode(): NotifyMode {
    return this._notifyMode;
  }

  setNotifyMode(mode: NotifyMode): void {
    this._notifyMode = NOTIFY_MODES.includes(mode) ? mode : 'failures-and-mine';
  }

  /**
   * This job was submitted or acted on from this browser: every end of it is told about
   * (unless notifications are off), if it is the user's own.
   */
  watch(id: string): void {
    this._watched.add(id);
  }

  isWatched(id: string): boolean {
    return this._watched.has(id);
  }

  // -- list ------------------------------------------------------------------------------

  private async _refreshLoop(): Promise<boolean> {
    let ok = false;
    do {
      this._listAgain = false;
      this._lastListRead = Date.now();
      [ok] = await Promise.all([this._loadList(), this._loadCluster()]);
    } while (this._listAgain && !this._disposed);
    return ok;
  }

  private async _loadList(): Promise<boolean> {
    const q = this._query;
    const state =
      q.state === 'all' ? '' : q.state === 'active' ? UNFINISHED_STATES.join(',') : q.state;
    const local = q.search.trim() !== '' || q.sort !== 'submitted';
    const params = {
      state,
      user: q.user.trim(),
      limit: local ? MAX_LIMIT : this.pageSize,
      offset: local ? 0 : q.page * this.pageSize
    };
    try {
      const result = await this._request<IJobList>(`jobs${query(params)}`);
      if (this._disposed || q !== this._query) {
        return true;
      }
      let jobs = result.jobs;
      let total = result.total;
      this._capped = false;
      if (local) {
        // The API has no search or priority order: apply them to the newest jobs it returns.
        this._capped = result.total > result.jobs.length;
        const needle = q.search.trim().toLowerCase();
        if (needle) {
          jobs = jobs.filter(
            job => job.name.toLowerCase().includes(needle) || job.id.toLowerCase().includes(needle)
          );
        }
        if (!jobs.length && this._capped && /^[A-Za-z0-9_-]{6,}$/.test(q.search.trim())) {
          // Beyond the newest jobs an exact id can still be found.
          const found = await this._lookup(q.search.trim());
          if (this._disposed || q !== this._query) {
            return true;
          }
          if (
            found &&
            (!state || state.split(',').includes(found.state)) &&
            (!params.user || found.user === params.user)
          ) {
            jobs = [found];
          }
        }
        if (q.sort === 'priority') {
          // Dispatch order: higher priority first, then the earlier submission.
          jobs = [...jobs].sort(
            (a, b) => b.priority - a.priority || (a.created ?? '').localeCompare(b.created ?? '')
          );
        }
        total = jobs.length;
        const start = q.page * this.pageSize;
        jobs = jobs.slice(start, start + this.pageSize);
      }
      if (!jobs.length && q.page > 0 && total > 0) {
        // The page emptied under us (jobs removed or filter narrowed): go to the last one.
        this._query = { ...q, page: Math.max(0, Math.ceil(total / this.pageSize) - 1) };
        this._listAgain = true;
        return true;
      }
      for (const job of jobs) {
        this._known.add(job.id);
      }
      this._jobs = jobs;
      this._total = total;
      this._error = null;
      this._stale = false;
      this._listChanged.emit();
      this._answered();
      return true;
    } catch (error) {
      if (!this._disposed && !this._noteUnavailable(error)) {
        this._error = (error as Error).message || String(error);
        this._listChanged.emit();
      }
      return false;
    }
  }

  private async _lookup(id: string): Promise<IJobView | null> {
    try {
      return await this.getJob(id);
    } catch {
      return null;
    }
  }

  private async _loadCluster(): Promise<void> {
    try {
      const cluster = await this._request<ICluster>('cluster');
      if (this._disposed) {
        return;
      }
      this._cluster = cluster;
      this._clusterChanged.emit();
    } catch {
      // The list read reports connection problems; an absent strip says the rest.
    }
    this._lastClusterRead = Date.now();
  }

  /** Re-read the list soon, folding bursts of changes into one request. */
  private _scheduleRefresh(): void {
    if (!this.visible) {
      this._stale = true;
      return;
    }
    if (this._refreshTimer !== null) {
      return;
    }
    const local = this._query.search.trim() !== '' || this._query.sort !== 'submitted';
    const gap = local ? 2000 : 500;
    const wait = Math.max(150, this._lastListRead + gap - Date.now());
    this._refreshTimer = window.setTimeout(() => {
      this._refreshTimer = null;
      void this.refresh();
    }, wait);
  }

  private _scheduleCluster(): void {
    if (!this.visible || this._clusterTimer !== null) {
      return;
    }
    const wait = Math.max(200, this._lastClusterRead + 1000 - Date.now());
    this._clusterTimer = window.setTimeout(() => {
      this._clusterTimer = null;
      void this._loadCluster();
    }, wait);
  }

  // -- detail ------------------------------------------------------------------------------

  private async _loadDetail(): Promise<void> {
    const id = this._selectedId;
    if (!id) {
      return;
    }
    try {
      const detail = await this.getJob(id);
      if (this._disposed || id !== this._selectedId) {
        return;
      }
      this._known.add(id);
      const previous = this._detail;
      this._detail = detail;
      this._detailError = null;
      this._patchList(detail);
      const opened = this._syncReadParts(detail);
      if (!opened && previous && !isRestricted(previous) && !isRestricted(detail)) {
        if (!previous.terminal && detail.terminal) {
          // The last points logged before the end may not have come through progress.
          void this._loadMetrics();
        }
        if (previous.attempts.length !== detail.attempts.length) {
          void this._logTail?.fetchNewer();
        }
      }
    } catch (error) {
      if (id !== this._selectedId) {
        return;
      }
      if (!this._noteUnavailable(error)) {
        this._detailError = (error as Error).message || String(error);
      }
    }
    this._detailChanged.emit();
  }

  /**
   * Open the log and metrics of the selected job when the user may read them, or drop
   * them when not (another user's job). Returns whether they were opened just now.
   */
  private _syncReadParts(job: IJobRow): boolean {
    const id = this._selectedId;
    if (!id || job.id !== id) {
      return false;
    }
    if (!may(job, 'read')) {
      this._closeReadParts();
      return false;
    }
    if (this._readPartsFor === id) {
      return false;
    }
    this._closeReadParts();
    this._readPartsFor = id;
    this._setLogTail(this._newLogTail(id, null));
    void this._loadMetrics();
    return true;
  }

  private _closeReadParts(): void {
    this._readPartsFor = null;
    this._setLogTail(null);
    this._metrics = null;
    this._clearTimer('_metricsTimer');
  }

  private _newLogTail(jobId: string, attempt: number | null): LogTail {
    return new LogTail({ jobId, attempt, serverSettings: this._serverSettings });
  }

  private _scheduleDetail(): void {
    if (this._detailTimer !== null || !this._selectedId) {
      return;
    }
    this._detailTimer = window.setTimeout(() => {
      this._detailTimer = null;
      void this._loadDetail();
    }, 200);
  }

  private _fetchMetrics(id: string): Promise<IMetricHistory> {
    return this._request<IMetricHistory>(`${this._jobPath(id)}/metrics`);
  }

  private async _loadMetrics(): Promise<void> {
    const id = this._selectedId;
    if (!id || this._readPartsFor !== id) {
      return;
    }
    this._lastMetricsRead = Date.now();
    let history: IMetricHistory;
    try {
      history = await this._fetchMetrics(id);
    } catch (error) {
      // Without MLflow histories the chart still grows from live progress.
      history = { job_id: id, attempts: [], warning: (error as Error).message || String(error) };
    }
    if (this._disposed || id !== this._selectedId || this._readPartsFor !== id) {
      return;
    }
    if (!Array.isArray(history.attempts)) {
      history = { ...history, attempts: [] };
    }
    // Keep live points newer than the history: MLflow lags behind progress reports.
    const live = this._metrics;
    if (live) {
      for (const attempt of live.attempts) {
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
    }
    this._metrics = history;
    this._detailChanged.emit();
  }

  /** Re-read the histories of a running job, at most every METRICS_MS. */
  private _scheduleMetrics(): void {
    if (this._metricsTimer !== null || !this._selectedId) {
      return;
    }
    const wait = Math.max(0, this._lastMetricsRead + METRICS_MS - Date.now());
    this._metricsTimer = window.setTimeout(() => {
      this._metricsTimer = null;
      void this._loadMetrics();
    }, wait);
  }

  /** Add the latest reported values to the open chart. */
  private _appendLive(progress: IProgress, attemptN?: number): void {
    const values = progress.metrics;
    const step = progress.step;
    if (!values || typeof step !== 'number') {
      return;
    }
    const detail = this._detail && !isRestricted(this._detail) ? this._detail : null;
    if (!detail) {
      return;
    }
    const n =
      attemptN ?? (detail.attempts.length ? detail.attempts[detail.attempts.length - 1].n : 1);
    const history: IMetricHistory = this._metrics ?? { job_id: detail.id, attempts: [] };
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

  private _setLogTail(tail: LogTail | null): void {
    this._logTail?.dispose();
    this._logTail = tail;
    if (tail) {
      void tail.start();
    }
  }

  // -- push channel --------------------------------------------------------------------------

  private _connect(): void {
    if (this._disposed) {
      return;
    }
    this._clearTimer('_reconnectTimer');
    const settings = this._serverSettings;
    const after = this._lastSeq ?? LIVE_ONLY;
    let url = URLExt.join(settings.wsUrl, API_PATH, 'events/ws') + `?after=${after}`;
    if (settings.token) {
      url += `&token=${encodeURIComponent(settings.token)}`;
    }
    let socket: WebSocket;
    try {
      socket = new settings.WebSocket(url);
    } catch {
      this._socketLost(false);
      return;
    }
    this._socket = socket;
    this._socketSeq = null;
    socket.onopen = () => {
      this._reconnectAttempts = 0;
      this._socketOpen = true;
      this._clearTimer('_pollTimer');
      this._updateConnection();
      // Whatever happened while the socket was down is in the list, not in the replay
      // (and the service may have restarted meanwhile).
      if (this._reconnected) {
        this._resync();
      }
      this._reconnected = true;
    };
    socket.onmessage = event => {
      let change: IChange;
      try {
        change = JSON.parse(String(event.data));
      } catch {
        return;
      }
      this._onSocketChange(change);
    };
    socket.onclose = () => {
      if (this._socket === socket) {
        const wasOpen = this._socketOpen;
        this._socket = null;
        this._socketOpen = false;
        this._socketLost(wasOpen);
      }
    };
  }

  /**
   * The socket closed, or could not be opened. One that was open closes when the
   * service goes away: say so until a read gets an answer, and try soon.
   */
  private _socketLost(wasOpen: boolean): void {
    if (this._disposed) {
      return;
    }
    if (wasOpen && this._unavailable === null) {
      this._unavailable = 'The live channel to the trainorch service closed.';
      this._reconnectDelay = 0;
    }
    this._socketFailed = true;
    this._updateConnection();
    this._pollDelay = wasOpen ? RECONNECT_MIN_MS : this._refreshInterval * 1000;
    this._schedulePoll();
    const delay =
      Math.min(SOCKET_MAX_MS, 1000 * 2 ** this._reconnectAttempts) * (0.75 + Math.random() / 2);
    this._reconnectAttempts = Math.min(this._reconnectAttempts + 1, 10);
    this._clearTimer('_reconnectTimer');
    this._reconnectTimer = window.setTimeout(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delay);
  }

  /**
   * A message of the socket. Within one connection numbers grow (a change replayed and
   * also pushed while the socket opened comes twice: the second is dropped). The first
   * message of a new connection numbered at or below the last one seen means the
   * service restarted and numbers its changes afresh.
   */
  private _onSocketChange(change: IChange): void {
    if (typeof change.seq !== 'number') {
      return;
    }
    if (this._socketSeq !== null && change.seq <= this._socketSeq) {
      return;
    }
    const first = this._socketSeq === null;
    this._socketSeq = change.seq;
    if (first && this._lastSeq !== null && change.seq <= this._lastSeq) {
      this._lastSeq = change.seq;
      this._resync();
    }
    this._onChange(change);
  }

  /** Read the change feed once (while there is no socket): changes, or that it restarted. */
  private async _readFeed(): Promise<void> {
    const after = this._lastSeq ?? LIVE_ONLY;
    let page: IChangePage;
    try {
      page = await this._request<IChangePage>(`events${query({ after, timeout: 0 })}`);
    } catch (error) {
      this._noteUnavailable(error);
      return;
    }
    if (this._disposed) {
      return;
    }
    if (page.reset) {
      // `after` is from an earlier run of the service (or none was known yet).
      const restarted = this._lastSeq !== null;
      this._lastSeq = page.last;
      if (restarted) {
        this._resync();
      }
      return;
    }
    for (const change of page.changes) {
      this._onChange(change);
    }
    this._lastSeq = Math.max(this._lastSeq ?? 0, page.last);
  }

  private _onChange(change: IChange): void {
    if (typeof change.seq !== 'number' || !change.job_id) {
      return;
    }
    this._lastSeq = Math.max(this._lastSeq ?? 0, change.seq);
    const time = toSeconds(change.time);
    if (time !== null) {
      const offset = time - Date.now() / 1000;
      // Replayed changes are old; the freshest message gives the best estimate.
      if (this._clockOffset === null || offset > this._clockOffset) {
        this._clockOffset = offset;
      }
    }
    const id = change.job_id;
    const selected = id === this._selectedId;
    const extra = changeExtra(change);
    if (change.kind === 'progress' && extra.progress) {
      const job = this._jobs.find(j => j.id === id);
      if (job && !isRestricted(job)) {
        job.progress = extra.progress;
        this._emitListSoon();
      }
      if (selected && this._detail && !isRestricted(this._detail)) {
        this._detail.progress = extra.progress;
        this._appendLive(extra.progress, extra.attempt);
        this._scheduleMetrics();
        this._detailChanged.emit();
      }
      return;
    }
    if (change.kind === 'logs') {
      if (selected && this._logTail) {
        if (this._logTail.attempt === null || this._logTail.attempt === extra.attempt) {
          void this._logTail.fetchNewer();
        }
      }
      return;
    }
    if (change.kind !== 'job') {
      return;
    }
    const job = this._jobs.find(j => j.id === id);
    if (job && change.state) {
      // A change names the state only; the re-read scheduled below brings the rest.
      job.state = change.state;
      job.terminal = isTerminalState(change.state);
      if (extra.priority !== undefined) {
        job.priority = extra.priority;
      }
      this._emitListSoon();
    }
    this._scheduleRefresh();
    this._scheduleCluster();
    if (selected) {
      this._scheduleDetail();
    }
    this._track(change);
  }

  /** Whether a job (or change) is the authenticated user's own; unknown users count as not. */
  private _isMine(user: string | undefined): boolean {
    return !!user && !!this._me && user === this._me.name;
  }

  /** Notice the user's new submissions, and tell about their jobs of interest that end. */
  private _track(change: IChange): void {
    const id = change.job_id;
    const state = change.state;
    if (!state || (typeof change.user === 'string' && this._me && !this._isMine(change.user))) {
      return;
    }
    const time = toSeconds(change.time);
    const fresh =
      (state === 'queued' || state === 'pending') &&
      change.priority === undefined &&
      time !== null &&
      !this._known.has(id) &&
      !this._watched.has(id) &&
      this.serverNow() - time < EXPECT_MS / 1000;
    this._known.add(id);
    if (fresh) {
      const now = Date.now();
      this._expected = this._expected.filter(t => now - t < EXPECT_MS);
      if (!this._expected.length) {
        // No `%%train` cell of this JupyterLab waits for a job: not one submitted from here.
        return;
      }
      // Retries and re-queues also say `queued`: a new job was created when the change was
      // published (both are server times), an old one long before.
      void this.getJob(id)
        .then(job => {
          const created = toSeconds(job.created);
          if (
            !this._isMine(job.user) ||
            created === null ||
            time === null ||
            Math.abs(time - created) > NEW_JOB_S
          ) {
            return;
          }
          const now = Date.now();
          this._expected = this._expected.filter(t => now - t < EXPECT_MS);
          if (this._expected.length) {
            this._expected.shift();
            this.watch(id);
          }
          // A job that appears while no `%%train` cell of this JupyterLab is waiting for one
          // came from elsewhere (a terminal, a script, a batch): not watched, so only what
          // the `notify` mode says about all of the user's jobs applies to it.
        })
        .catch(() => undefined);
      return;
    }
    if (state !== 'retrying' && !isTerminalState(state)) {
      return;
    }
    const fromHere = this._watched.has(id);
    const mode = this._notifyMode;
    // Decide on the change alone, so that ends nobody is told about cost no request.
    const wanted =
      mode !== 'none' &&
      (fromHere || (state !== 'retrying' && (mode === 'all-mine' || state === 'failed')));
    if (!wanted) {
      return;
    }
    void this.getJob(id)
      .then(job => {
        // Only the user's own jobs: an admin acting on someone else's is not told when it ends.
        if (isRestricted(job) || !this._isMine(job.user)) {
          return;
        }
        const key = `${job.state}:${job.attempts.length}`;
        if (this._notified.get(id) === key) {
          return;
        }
        this._notified.set(id, key);
        if (job.state === 'retrying' || job.terminal) {
          this._notice.emit({ job, state: job.state as IJobNotice['state'], fromHere });
        }
      })
      .catch(() => undefined);
  }

  /** Coalesce many small patches (progress from many jobs) into one render. */
  private _emitListSoon(): void {
    if (this._emitPending) {
      return;
    }
    this._emitPending = true;
    // A timer, not an animation frame: frames stop in background tabs, and the
    // list should be current when the user comes back.
    window.setTimeout(() => {
      this._emitPending = false;
      if (!this._disposed) {
        this._listChanged.emit();
      }
    }, 100);
  }

  // -- fallback polling and reconnection --------------------------------------------------------

  /** Polls run while there is no socket, and while the service does not answer. */
  private _schedulePoll(): void {
    this._clearTimer('_pollTimer');
    const needed = !this._socketOpen || this._unavailable !== null;
    if (this._disposed || !this._started || !needed || !this.visible) {
      return;
    }
    this._pollTimer = window.setTimeout(() => {
      this._pollTimer = null;
      void this._poll();
    }, this._pollDelay);
  }

  private async _poll(): Promise<void> {
    const base = this._refreshInterval * 1000;
    const before = this._signature();
    const away = this._unavailable !== null;
    if (!away && !this._socketOpen) {
      await this._readFeed();
    }
    const ok = await this.refresh();
    if (ok && !away && this._selectedId) {
      // (After an absence, `_answered` re-read the detail and the log already.)
      await this._loadDetail();
      if (this._logTail && !this._logTail.finished) {
        await this._logTail.fetchNewer();
      }
    }
    if (this._unavailable !== null) {
      // The service is away: back off, but never sooner than it asked.
      const hint = (this._retryAfter ?? 0) * 1000;
      this._reconnectDelay = Math.min(
        RECONNECT_MAX_MS,
        Math.max(RECONNECT_MIN_MS, this._reconnectDelay * 2)
      );
      this._pollDelay = Math.max(hint, this._reconnectDelay * (0.75 + Math.random() / 2));
    } else if (!ok) {
      this._pollDelay = Math.min(this._pollDelay * 2, Math.max(base * 12, 60000));
    } else {
      // Nothing moved: ask less often, up to six times the configured interval.
      this._pollDelay =
        this._signature() === before ? Math.min(this._pollDelay * 1.5, base * 6) : base;
    }
    this._schedulePoll();
  }

  private _signature(): string {
    const parts = this._jobs.map(job =>
      isRestricted(job)
        ? `${job.id}:${job.state}:${job.priority}:${job.queue_position}`
        : `${job.id}:${job.state}:${job.priority}:${job.progress?.step}:${job.attempts.length}`
    );
    return `${this._total}|${parts.join(',')}`;
  }

  /**
   * A read failed. When the service is away (restarting, or the server in front of it
   * unreachable), show `reconnecting` and keep retrying with backoff; returns whether
   * that was the reason (and the error need not be shown).
   */
  private _noteUnavailable(error: unknown): boolean {
    if (!isUnavailable(error) || this._disposed) {
      return false;
    }
    if (this._unavailable === null) {
      this._reconnectDelay = 0;
      this._pollDelay = RECONNECT_MIN_MS;
    }
    this._unavailable = error.message;
    this._retryAfter = error.retryAfter;
    this._updateConnection();
    if (this._pollTimer === null) {
      this._schedulePoll();
    }
    return true;
  }

  /** The list was read: if the service had been away, it is back (perhaps restarted). */
  private _answered(): void {
    if (this._me === null && !this._meRefused) {
      void this._loadMe();
    }
    if (this._unavailable === null) {
      return;
    }
    this._unavailable = null;
    this._retryAfter = null;
    this._pollDelay = this._refreshInterval * 1000;
    this._updateConnection();
    if (!this._socketOpen && this._socket === null) {
      // Do not wait for the socket's backoff: the service answers now.
      this._reconnectAttempts = 0;
      this._connect();
    }
    this._resync();
  }

  /**
   * Read again everything shown, as after a restart of the service: the list, the
   * cluster, the open detail, its log and metrics, and the comparison.
   */
  private _resync(): void {
    if (this._disposed) {
      return;
    }
    this._scheduleRefresh();
    this._scheduleCluster();
    this._scheduleDetail();
    void this._logTail?.fetchNewer();
    if (this._readPartsFor !== null) {
      void this._loadMetrics();
    }
  }

  private async _loadMe(): Promise<void> {
    if (this._meLoading) {
      return;
    }
    this._meLoading = true;
    try {
      const me = await this._request<IMe>('me');
      if (!this._disposed && me && typeof me.name === 'string') {
        this._me = me;
        this._listChanged.emit();
      }
    } catch (error) {
      // Away: read again after the next list read that gets an answer. Refused: leave it.
      this._meRefused = !this._noteUnavailable(error);
    } finally {
      this._meLoading = false;
    }
  }

  // -- helpers ----------------------------------------------------------------------------------

  private _visibilityChanged(): void {
    if (this.visible) {
      if (this._stale) {
        void this.refresh();
      }
      if (this._unavailable === null) {
        this._pollDelay = this._refreshInterval * 1000;
      }
      this._schedulePoll();
    } else {
      this._clearTimer('_pollTimer');
    }
  }

  private _onVisibility = (): void => {
    this._visibilityChanged();
  };

  private _updateConnection(): void {
    const connection: Connection =
      this._unavailable !== null
        ? 'reconnecting'
        : this._socketOpen
          ? 'live'
          : this._socketFailed
            ? 'polling'
            : 'connecting';
    if (this._connection !== connection) {
      this._connection = connection;
      this._connectionChanged.emit(connection);
    }
  }

  /** A request to the trainorch API with this model's server settings. */
  private _request<T>(path: string, init: RequestInit = {}): Promise<T> {
    return requestAPI<T>(path, init, this._serverSettings);
  }

  /** Act on a job (`sub` below its path); it is watched, and the answer shown at once. */
  private async _act(id: string, sub: string, init: RequestInit): Promise<IJobView> {
    this.watch(id);
    return this._apply(await this._request<IJobView>(`${this._jobPath(id)}${sub}`, init));
  }

  /** Put a job returned by an action into the list and the detail at once. */
  private _apply(job: IJobView): IJobView {
    this._patchList(job);
    if (job.id === this._selectedId) {
      this._detail = job;
      this._syncReadParts(job);
      this._detailChanged.emit();
    }
    this._scheduleRefresh();
    return job;
  }

  private _patchList(job: IJobRow): void {
    const index = this._jobs.findIndex(j => j.id === job.id);
    if (index >= 0) {
      const copy = this._jobs.slice();
      copy[index] = job;
      this._jobs = copy;
      this._listChanged.emit();
    }
  }

  private _jobPath(id: string): string {
    return `jobs/${encodeURIComponent(id)}`;
  }

  private _clearTimer(
    name:
      | '_refreshTimer'
      | '_pollTimer'
      | '_reconnectTimer'
      | '_detailTimer'
      | '_clusterTimer'
      | '_metricsTimer'
  ): void {
    const timer = this[name];
    if (timer !== null) {
      window.clearTimeout(timer);
      this[name] = null;
    }
  }

  private _serverSettings: ServerConnection.ISettings;
  private _refreshInterval: number;
  private _pollDelay = 5000;
  private _query: IQuery;
  private _jobs: IJobRow[] = [];
  private _total = 0;
  private _capped = false;
  private _error: string | null = null;
  private _cluster: ICluster | null = null;
  private _connection: Connection = 'connecting';
  private _socket: WebSocket | null = null;
  private _socketOpen = false;
  /** Some socket closed or could not be opened (then reads are polled). */
  private _socketFailed = false;
  /** The last change number seen from the service; null before any. */
  private _lastSeq: number | null = null;
  /** The last change number of the current socket; null before its first message. */
  private _socketSeq: number | null = null;
  private _reconnectAttempts = 0;
  private _reconnected = false;
  /** Why the service is being reconnected to; null while it answers. */
  private _unavailable: string | null = null;
  private _retryAfter: number | null = null;
  private _reconnectDelay = 0;
  private _me: IMe | null = null;
  private _meLoading = false;
  private _meRefused = false;
  private _clockOffset: number | null = null;
  private _selectedId: string | null = null;
  private _detail: IJobView | null = null;
  /** The selected job whose log and metrics are open (the user may read them). */
  private _readPartsFor: string | null = null;
  private _detailError: string | null = null;
  private _logTail: LogTail | null = null;
  private _known = new Set<string>();
  private _watched = new Set<string>();
  private _notifyMode: NotifyMode = 'failures-and-mine';
  private _notified = new Map<string, string>();
  private _expected: number[] = [];
  private _visible = false;
  private _stale = false;
  private _started = false;
  private _disposed = false;
  private _listBusy = false;
  private _listAgain = false;
  private _listPromise: Promise<boolean> | null = null;
  private _lastListRead = 0;
  private _lastClusterRead = 0;
  private _emitPending = false;
  private _refreshTimer: number | null = null;
  private _pollTimer: number | null = null;
  private _reconnectTimer: number | null = null;
  private _detailTimer: number | null = null;
  private _clusterTimer: number | null = null;
  private _clusterInterval = 0;
  private _metrics: IMetricHistory | null = null;
  private _metricsTimer: number | null = null;
  private _lastMetricsRead = 0;
  private _checked: ReadonlySet<string> = new Set();
  private _compareIds: string[] = [];
  private _compareJobs: IJob[] = [];
  private _compareMetrics: Record<string, IMetricHistory> = {};
  private _compareLoading = false;
  private _compareError: string | null = null;
  private _compareToken = 0;
  private _compareChanged = new Signal<this, void>(this);
  private _listChanged = new Signal<this, void>(this);
  private _clusterChanged = new Signal<this, void>(this);
  private _detailChanged = new Signal<this, void>(this);
  private _connectionChanged = new Signal<this, Connection>(this);
  private _notice = new Signal<this, IJobNotice>(this);
}

export namespace JobsModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** Jobs per page of the list (the only ones rendered). */
    pageSize?: number;
    /** Seconds between list reads when the socket is unavailable. */
    refreshInterval?: number;
    /** Initial state filter: `all`, `active` or a job state. */
    stateFilter?: string;
  }
}

/**
 * What a change carries beyond the contract's fields (`Change` allows extra ones): the
 * progress report, the attempt and the new priority, each only when it has its shape.
 */
function changeExtra(change: IChange): {
  progress?: IProgress;
  attempt?: number;
  priority?: number;
} {
  const { progress, attempt, priority } = change;
  return {
    progress:
      progress && typeof progress === 'object' && !Array.isArray(progress)
        ? (progress as IProgress)
        : undefined,
    attempt: typeof attempt === 'number' ? attempt : undefined,
    priority: typeof priority === 'number' ? priority : undefined
  };
}
