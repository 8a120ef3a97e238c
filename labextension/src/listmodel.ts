/**
 * JobListModel: the sidebar's page of jobs, its query and the cluster strip.
 *
 * The server filters, searches and sorts (`GET jobs?state=&user=&q=&sort=`); the model
 * keeps one page. Changes patch the rows they name (a new object per changed row, so
 * that a view re-renders that row only) and schedule one coalesced re-read of the page.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { SortKey, TrainorchClient, errorMessage } from './api';
import { changeExtra } from './changes';
import {
  IChange,
  ICluster,
  IJobRow,
  UNFINISHED_STATES,
  isRestricted,
  isTerminalState
} from './types';

export interface IQuery {
  /** `all`, `active` or one job state. */
  state: string;
  /** Empty for every user. */
  user: string;
  /** Part of a job's name, or the start of its id. */
  search: string;
  sort: SortKey;
  /** Zero-based page. */
  page: number;
}

const CLUSTER_MS = 15000;
/** Re-reads of the page that changes call for are at least this far apart. */
const LIST_GAP_MS = 500;
const CLUSTER_GAP_MS = 1000;

export class JobListModel implements IDisposable {
  constructor(options: JobListModel.IOptions) {
    this._client = options.client;
    this.pageSize = options.pageSize ?? 100;
    this._query = {
      state: options.stateFilter ?? 'all',
      user: '',
      search: '',
      sort: 'newest',
      page: 0
    };
  }

  readonly pageSize: number;

  /** The page of jobs, its total, the query or the ticked jobs changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get clusterChanged(): ISignal<this, void> {
    return this._clusterChanged;
  }

  get jobs(): readonly IJobRow[] {
    return this._jobs;
  }

  get total(): number {
    return this._total;
  }

  get pageCount(): number {
    return Math.max(1, Math.ceil(this._total / this.pageSize));
  }

  get query(): Readonly<IQuery> {
    return this._query;
  }

  /** Whether the page has been read at least once. */
  get loaded(): boolean {
    return this._loaded;
  }

  get error(): string | null {
    return this._error;
  }

  get cluster(): ICluster | null {
    return this._cluster;
  }

  /** Ids ticked in the list for comparison. */
  get checked(): ReadonlySet<string> {
    return this._checked;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  start(): void {
    void this.refresh();
    // Workers come and go without job changes (adaptive scaling): re-read the strip now and then.
    this._clusterInterval = window.setInterval(() => {
      if (this._visible) {
        this._scheduleCluster();
      }
    }, CLUSTER_MS);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    window.clearInterval(this._clusterInterval);
    window.clearTimeout(this._refreshTimer);
    window.clearTimeout(this._clusterTimer);
    Signal.clearData(this);
  }

  /** While nobody sees the list, changes only mark it stale. */
  setVisible(visible: boolean): void {
    this._visible = visible;
    if (visible && this._stale) {
      void this.refresh();
    }
  }

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
    this._changed.emit();
    void this.refresh();
  }

  /**
   * Re-read the page and the cluster; calls made meanwhile share one more read.
   * Resolves to whether the page could be read (the error is in `error`).
   */
  async refresh(): Promise<boolean> {
    window.clearTimeout(this._refreshTimer);
    this._refreshTimer = 0;
    if (this._promise) {
      this._again = true;
      return this._promise;
    }
    this._promise = this._refreshLoop();
    try {
      return await this._promise;
    } finally {
      this._promise = null;
      this._changed.emit();
    }
  }

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
    this._changed.emit();
  }

  /** Tick exactly these jobs. */
  setAllChecked(ids: readonly string[]): void {
    this._checked = new Set(ids);
    this._changed.emit();
  }

  /** A job found on the page, without a request. */
  findJob(id: string): IJobRow | null {
    const index = this._index().get(id);
    return index === undefined ? null : this._jobs[index];
  }

  /** Show a job read elsewhere (an action's answer, a detail) in its row at once. */
  put(job: IJobRow): void {
    const index = this._index().get(job.id);
    if (index !== undefined && this._jobs[index] !== job) {
      const copy = this._jobs.slice();
      copy[index] = job;
      this._setJobs(copy);
      this._changed.emit();
    }
  }

  /** Patch the rows a batch of changes names; re-read the page soon when states moved. */
  applyChanges(changes: readonly IChange[]): void {
    const index = this._index();
    let rows: IJobRow[] | null = null;
    let stateMoved = false;
    for (const change of changes) {
      const extra = changeExtra(change);
      if (change.kind === 'job') {
        stateMoved = true;
      }
      const at = index.get(change.job_id);
      if (at === undefined) {
        continue;
      }
      const job = (rows ?? this._jobs)[at];
      let patched: IJobRow | null = null;
      if (change.kind === 'progress' && extra.progress && !isRestricted(job)) {
        patched = { ...job, progress: extra.progress };
      } else if (change.kind === 'job' && change.state) {
        // A change names the state only; the re-read scheduled below brings the rest.
        patched = { ...job, state: change.state, terminal: isTerminalState(change.state) };
        if (extra.priority !== undefined) {
          patched.priority = extra.priority;
        }
      }
      if (patched) {
        rows = rows ?? this._jobs.slice();
        rows[at] = patched;
      }
    }
    if (rows) {
      this._jobs = rows;
      this._changed.emit();
    }
    if (stateMoved) {
      this._scheduleRefresh();
      this._scheduleCluster();
    }
  }

  /** Read the page and the strip again (the service restarted, or came back). */
  resync(): void {
    this._scheduleRefresh();
    this._scheduleCluster();
  }

  private async _refreshLoop(): Promise<boolean> {
    let ok = false;
    do {
      this._again = false;
      this._lastRead = Date.now();
      [ok] = await Promise.all([this._loadPage(), this._loadCluster()]);
    } while (this._again && !this._disposed);
    return ok;
  }

  private async _loadPage(): Promise<boolean> {
    const q = this._query;
    try {
      const result = await this._client.listJobs({
        state:
          q.state === 'all' ? '' : q.state === 'active' ? UNFINISHED_STATES.join(',') : q.state,
        user: q.user.trim(),
        q: q.search.trim(),
        sort: q.sort,
        limit: this.pageSize,
        offset: q.page * this.pageSize
      });
      if (this._disposed || q !== this._query) {
        return true;
      }
      if (!result.jobs.length && q.page > 0 && result.total > 0) {
        // The page emptied under us (jobs removed or filter narrowed): go to the last one.
        this._query = { ...q, page: Math.max(0, this.pageCount - 1) };
        this._total = result.total;
        this._again = true;
        return true;
      }
      this._setJobs(this._keepUnchanged(result.jobs));
      this._total = result.total;
      this._error = null;
      this._stale = false;
      this._loaded = true;
      return true;
    } catch (error) {
      // While the service is away the header says so; the rows stay as they were.
      if (!this._disposed && this._client.unavailable === null) {
        this._error = errorMessage(error);
      }
      return false;
    }
  }

  /** Rows equal to the ones shown keep their objects, so their views need not render again. */
  private _keepUnchanged(jobs: IJobRow[]): IJobRow[] {
    const shown = this._index();
    return jobs.map(job => {
      const at = shown.get(job.id);
      if (at === undefined) {
        return job;
      }
      const old = this._jobs[at];
      return JSON.stringify(old) === JSON.stringify(job) ? old : job;
    });
  }

  private async _loadCluster(): Promise<void> {
    try {
      const cluster = await this._client.cluster();
      if (!this._disposed) {
        this._cluster = cluster;
        this._clusterChanged.emit();
      }
    } catch {
      // The strip says the service is away; other failures leave the last figures.
    }
    this._lastClusterRead = Date.now();
  }

  /** Re-read the page soon, folding bursts of changes into one request. */
  private _scheduleRefresh(): void {
    if (!this._visible) {
      this._stale = true;
      return;
    }
    if (this._refreshTimer) {
      return;
    }
    const wait = Math.max(150, this._lastRead + LIST_GAP_MS - Date.now());
    this._refreshTimer = window.setTimeout(() => {
      this._refreshTimer = 0;
      void this.refresh();
    }, wait);
  }

  private _scheduleCluster(): void {
    if (!this._visible || this._clusterTimer) {
      return;
    }
    const wait = Math.max(200, this._lastClusterRead + CLUSTER_GAP_MS - Date.now());
    this._clusterTimer = window.setTimeout(() => {
      this._clusterTimer = 0;
      void this._loadCluster();
    }, wait);
  }

  private _setJobs(jobs: IJobRow[]): void {
    this._jobs = jobs;
    this._indexCache = null;
  }

  /** Where each job of the page is: one pass per page, not one per change. */
  private _index(): Map<string, number> {
    if (!this._indexCache) {
      this._indexCache = new Map(this._jobs.map((job, i) => [job.id, i]));
    }
    return this._indexCache;
  }

  private _client: TrainorchClient;
  private _query: IQuery;
  private _jobs: IJobRow[] = [];
  private _indexCache: Map<string, number> | null = null;
  private _total = 0;
  private _loaded = false;
  private _error: string | null = null;
  private _cluster: ICluster | null = null;
  private _checked: ReadonlySet<string> = new Set();
  private _visible = false;
  private _stale = false;
  private _disposed = false;
  private _promise: Promise<boolean> | null = null;
  private _again = false;
  private _lastRead = 0;
  private _lastClusterRead = 0;
  private _refreshTimer = 0;
  private _clusterTimer = 0;
  private _clusterInterval = 0;
  private _changed = new Signal<this, void>(this);
  private _clusterChanged = new Signal<this, void>(this);
}

export namespace JobListModel {
  export interface IOptions {
    client: TrainorchClient;
    /** Jobs per page of the list (the only ones rendered). */
    pageSize?: number;
    /** Initial state filter: `all`, `active` or a job state. */
    stateFilter?: string;
  }
}
