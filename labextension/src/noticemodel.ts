/**
 * NoticeModel: which of the user's jobs reached a state worth telling them about.
 *
 * It watches the jobs submitted or acted on from this browser, recognises the job a
 * `%%train` cell run here submits, and decides from the `notify` mode which ends raise a
 * notice (`JobNotifier` in notify.ts shows them). Other users' jobs never do.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient } from './api';
import { toSeconds } from './format';
import { IChange, IJob, IMe, JobState, isRestricted, isTerminalState } from './types';

/** A job of interest that reached a state worth telling the user about. */
export interface IJobNotice {
  job: IJob;
  state: Extract<JobState, 'succeeded' | 'failed' | 'cancelled' | 'retrying'>;
  /** Whether the job was submitted or acted on from this browser (see `NoticeModel.watch`). */
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

/** A job whose creation is this close to its first change is a new submission. */
const NEW_JOB_S = 10;
/** How long after a `%%train` cell runs its job is expected to appear. */
const EXPECT_MS = 60000;

export class NoticeModel {
  constructor(options: NoticeModel.IOptions) {
    this._client = options.client;
    this._me = options.me;
    this._serverNow = options.serverNow;
  }

  /** One of the user's jobs of interest ended or is being retried. */
  get notice(): ISignal<this, IJobNotice> {
    return this._notice;
  }

  /** Which ends of the user's jobs are told about (the `notify` setting). */
  get notifyMode(): NotifyMode {
    return this._mode;
  }

  setNotifyMode(mode: NotifyMode): void {
    this._mode = NOTIFY_MODES.includes(mode) ? mode : 'failures-and-mine';
  }

  /** A `%%train` cell was run in this browser: the user's next new job is taken as from here. */
  expectSubmission(): void {
    this._expected = this._pendingExpectations();
    this._expected.push(Date.now());
  }

  /** This job was submitted or acted on from this browser: every end of it is told about. */
  watch(id: string): void {
    this._watched.add(id);
    this._known.add(id);
  }

  /** Jobs seen in a list: their first change is not a new submission. */
  know(ids: Iterable<string>): void {
    for (const id of ids) {
      this._known.add(id);
    }
  }

  applyChanges(changes: readonly IChange[]): void {
    for (const change of changes) {
      if (change.kind === 'job') {
        this._track(change);
      }
    }
  }

  private _isMine(user: string | undefined): boolean {
    const me = this._me();
    return !!user && !!me && user === me.name;
  }

  private _pendingExpectations(): number[] {
    const now = Date.now();
    return this._expected.filter(t => now - t < EXPECT_MS);
  }

  /** Notice the user's new submissions, and tell about their jobs of interest that end. */
  private _track(change: IChange): void {
    const id = change.job_id;
    const state = change.state;
    if (!state || (typeof change.user === 'string' && this._me() && !this._isMine(change.user))) {
      return;
    }
    const time = toSeconds(change.time);
    const fresh =
      (state === 'queued' || state === 'pending') &&
      change.priority === undefined &&
      time !== null &&
      !this._known.has(id) &&
      this._serverNow() - time < EXPECT_MS / 1000;
    this._known.add(id);
    if (fresh) {
      this._expected = this._pendingExpectations();
      if (this._expected.length) {
        this._claim(id, time);
      }
      // Else no `%%train` cell of this JupyterLab waits for a job: not one submitted from here.
      return;
    }
    if (state !== 'retrying' && !isTerminalState(state)) {
      return;
    }
    const fromHere = this._watched.has(id);
    const mode = this._mode;
    // Decide on the change alone, so that ends nobody is told about cost no request.
    const wanted =
      mode !== 'none' &&
      (fromHere || (state !== 'retrying' && (mode === 'all-mine' || state === 'failed')));
    if (!wanted) {
      return;
    }
    void this._client
      .getJob(id)
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

  /**
   * A new job appeared while a `%%train` cell of this JupyterLab waits for one: it is that
   * cell's when it is the user's and was created when the change was published (retries
   * and re-queues also say `queued`, but their job was created long before).
   */
  private _claim(id: string, time: number): void {
    void this._client
      .getJob(id)
      .then(job => {
        const created = toSeconds(job.created);
        if (!this._isMine(job.user) || created === null || Math.abs(time - created) > NEW_JOB_S) {
          return;
        }
        this._expected = this._pendingExpectations();
        if (this._expected.length) {
          this._expected.shift();
          this.watch(id);
        }
      })
      .catch(() => undefined);
  }

  private _client: TrainorchClient;
  private _me: () => IMe | null;
  private _serverNow: () => number;
  private _mode: NotifyMode = 'failures-and-mine';
  private _known = new Set<string>();
  private _watched = new Set<string>();
  private _notified = new Map<string, string>();
  private _expected: number[] = [];
  private _notice = new Signal<this, IJobNotice>(this);
}

export namespace NoticeModel {
  export interface IOptions {
    client: TrainorchClient;
    /** Who the user is, once known. */
    me: () => IMe | null;
    /** Server time in epoch seconds. */
    serverNow: () => number;
  }
}
