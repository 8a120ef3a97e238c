/**
 * JobListModel: the sidebar's page of jobs and its query.
 *
 * The server filters, searches and sorts (`GET jobs?state=&user=&q=&sort=`); the model
 * keeps one page. Changes patch the rows they name (a new object per changed row, so
 * that a view re-renders that row only) and schedule one coalesced re-read of the page.
 */
import { IDisposable } from '@lumino/disposable';
import { Throttler } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { SortKey, TrainorchClient, errorMessage } from './api';
import { changeExtra } from './changes';
import { IChange, IJobRow, UNFINISHED_STATES, isRestricted, isTerminalState } from './types';

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

/** Changes call for a re-read of the page this long after the first of a burst. */
const LIST_DELAY_MS = 300;

export class JobListModel implements IDisposable {
  constructor(options: JobListModel.IOptions) {
    this._client = options.client;
    this.pageSize = options.pageSize ?? 40;
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

  /** Ids ticked in the list for comparison. */
  get checked(): ReadonlySet<string> {
    return this._checked;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  start(): void {
    void this.refresh();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._soon.dispose();
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
    const narrowed = next.page === this._query.page && next.sort === this._query.sort;
    this._query = next;
    if (narrowed) {
      // Answer at once from the rows shown; the server's answer, over every job, follows.
      this._setJobs(this._jobs.filter(job => matches(job, next)));
    }
    this._changed.emit();
    void this.refresh();
  }

  /**
   * Re-read the page; calls made meanwhile share one more read.
   * Resolves to whether the page could be read (the error is in `error`).
   */
  async refresh(): Promise<boolean> {
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
    }
  }

  /** Read the page again soon (the service restarted, or came back, or an action answered). */
  resync(): void {
    this._scheduleRefresh();
  }

  private async _refreshLoop(): Promise<boolean> {
    let ok = false;
    do {
      this._again = false;
      ok = await this._loadPage();
    } while (this._again && !this._disposed);
    return ok;
  }

  private async _loadPage(): Promise<boolean> {
    const q = this._query;
    try {
      const result = await this._client.listJobs({
        state: (statesOf(q) ?? []).join(','),
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

  /** Re-read the page soon, folding bursts of changes into one request. */
  private _scheduleRefresh(): void {
    if (!this._visible) {
      this._stale = true;
      return;
    }
    void this._soon.invoke().catch(() => undefined);
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
  private _checked: ReadonlySet<string> = new Set();
  private _visible = false;
  private _stale = false;
  private _disposed = false;
  private _promise: Promise<boolean> | null = null;
  private _again = false;
  // Not awaited: a throttler drops calls while its function runs, and a change that comes
  // during a read must still bring another one.
  private _soon = new Throttler(() => void this.refresh(), {
    limit: LIST_DELAY_MS,
    edge: 'trailing'
  });
  private _changed = new Signal<this, void>(this);
}

/** The states the query asks for, or null for every state. */
function statesOf(q: IQuery): readonly string[] | null {
  return q.state === 'all' ? null : q.state === 'active' ? UNFINISHED_STATES : [q.state];
}

/** Whether a job shown passes the query, as the server decides (`GET jobs`'s `q=`: part of the name, or the id's start). */
function matches(job: IJobRow, q: IQuery): boolean {
  const needle = q.search.trim().toLowerCase();
  const user = q.user.trim();
  const states = statesOf(q);
  return (
    (!needle || job.name.toLowerCase().includes(needle) || job.id.startsWith(q.search.trim())) &&
    (!user || job.user === user) &&
    (!states || states.includes(job.state))
  );
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
