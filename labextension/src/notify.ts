/**
 * Notifications for the user's jobs that end, grouped so that a sweep or a burst of
 * jobs raises one notification, not one per job.
 *
 * Which jobs are told about is decided by the model (`NoticeModel.notifyMode`: only the
 * user's own, never another user's); here notices are gathered for a short window and
 * shown: one job alone as before, several ending within `windowMs` of each other as one
 * summary ("5 training jobs ended: 4 succeeded, 1 failed"), and the jobs of one sweep
 * (`job.group`) as one notification per sweep, updated in place as more of them end.
 * Alerts an admin's rules send to the user (`AlertModel`) are shown one each, at once.
 */
import { Notification } from '@jupyterlab/apputils';
import { IDisposable } from '@lumino/disposable';

import { IAlertNotice } from './alertmodel';
import { IJobNotice } from './noticemodel';
import { may } from './types';

type NoticeState = IJobNotice['state'];

/** The order in which counts are listed in a summary. */
const ORDER: readonly NoticeState[] = ['succeeded', 'failed', 'cancelled', 'retrying'];

const WORDS: Record<NoticeState, string> = {
  succeeded: 'succeeded',
  failed: 'failed',
  cancelled: 'cancelled',
  retrying: 'will be retried'
};

/** Notices closer together than this are shown as one. */
const WINDOW_MS = 2000;
/** A steady trickle of ends is still shown at least this often. */
const MAX_WAIT_MS = 6000;

export class JobNotifier implements IDisposable {
  constructor(options: JobNotifier.IOptions) {
    this._options = options;
    this._windowMs = options.windowMs ?? WINDOW_MS;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    this._pending.clear();
  }

  /** Take a notice; it is shown after the window, with those that came with it. */
  add(notice: IJobNotice): void {
    if (this._disposed) {
      return;
    }
    const now = Date.now();
    if (!this._pending.size) {
      this._first = now;
    }
    // The latest word on a job wins (an attempt failed, then the job failed).
    this._pending.delete(notice.job.id);
    this._pending.set(notice.job.id, notice);
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    const wait = Math.max(0, Math.min(this._windowMs, this._first + MAX_WAIT_MS - now));
    this._timer = window.setTimeout(() => this.flush(), wait);
  }

  /** Show what was gathered now. */
  flush(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    const notices = [...this._pending.values()];
    this._pending.clear();
    if (this._disposed || !notices.length) {
      return;
    }
    const loose: IJobNotice[] = [];
    const sweeps = new Map<string, IJobNotice[]>();
    for (const notice of notices) {
      const group = notice.job.group;
      if (group) {
        sweeps.set(group, [...(sweeps.get(group) ?? []), notice]);
      } else {
        loose.push(notice);
      }
    }
    for (const [group, list] of sweeps) {
      this._showSweep(group, list);
    }
    if (loose.length === 1) {
      this._showOne(loose[0]);
    } else if (loose.length > 1) {
      const ends = new Map<string, NoticeState>(loose.map(n => [n.job.id, n.state]));
      const { message, type, autoClose } = summary(`${loose.length} training jobs`, ends);
      Notification.emit(message, type, { autoClose, actions: this._actions(loose, ends) });
    }
  }

  /** One notification per sweep, its counts kept up to date as more of its jobs end. */
  private _showSweep(group: string, notices: IJobNotice[]): void {
    const known = this._sweeps.get(group) ?? { id: '', ends: new Map<string, NoticeState>() };
    for (const notice of notices) {
      known.ends.set(notice.job.id, notice.state);
    }
    this._sweeps.set(group, known);
    const { message, type, autoClose } = summary(
      `Sweep ${group}: ${known.ends.size} training job${known.ends.size === 1 ? '' : 's'}`,
      known.ends
    );
    const actions = this._actions(notices, known.ends, group);
    if (known.id && Notification.update({ id: known.id, message, type, autoClose, actions })) {
      return;
    }
    known.id = Notification.emit(message, type, { autoClose, actions });
  }

  private _actions(
    notices: IJobNotice[],
    ends: Map<string, NoticeState>,
    group?: string
  ): Notification.IAction[] {
    const ids = [...ends.keys()];
    const actions: Notification.IAction[] = [
      {
        label: 'Show',
        caption: 'Show these jobs in the training jobs panel',
        callback: () => this._options.showJobs(ids, group)
      }
    ];
    const failed = notices.find(n => n.state === 'failed');
    if (failed) {
      actions.push({
        label: 'Show failed',
        caption: `Open ${failed.job.name} (${failed.job.id}), a job that failed`,
        callback: () => this._options.showJob(failed.job.id)
      });
    }
    return actions;
  }

  /** One job alone: its own notification, as it always was. */
  private _showOne(notice: IJobNotice): void {
    const { job, state } = notice;
    const label = `${job.name} (${job.id})`;
    const show = { label: 'Show', callback: () => this._options.showJob(job.id) };
    switch (state) {
      case 'succeeded':
        Notification.success(`Training job ${label} succeeded.`, {
          autoClose: 8000,
          actions: [show]
        });
        break;
      case 'failed':
        Notification.error(`Training job ${label} failed${job.error ? `: ${job.error}` : '.'}`, {
          autoClose: false,
          actions: may(job, 'retry')
            ? [show, { label: 'Retry', callback: () => this._options.retry(job.id) }]
            : [show]
        });
        break;
      case 'retrying': {
        const last = job.attempts[job.attempts.length - 1];
        Notification.warning(
          `Training job ${label}: attempt ${last ? last.n : '?'} failed; it will be retried.`,
          { autoClose: 8000, actions: [show] }
        );
        break;
      }
      case 'cancelled':
        Notification.info(`Training job ${label} was cancelled.`, {
          autoClose: 5000,
          actions: [show]
        });
        break;
    }
  }

  private _options: JobNotifier.IOptions;
  private _windowMs: number;
  private _pending = new Map<string, IJobNotice>();
  private _first = 0;
  private _timer: number | null = null;
  private _sweeps = new Map<string, { id: string; ends: Map<string, NoticeState> }>();
  private _disposed = false;
}

/** "5 training jobs ended: 4 succeeded, 1 failed", with the type and lifetime it deserves. */
export function summary(
  subject: string,
  ends: ReadonlyMap<string, NoticeState>
): { message: string; type: Notification.TypeOptions; autoClose: number | false } {
  const counts = new Map<NoticeState, number>();
  for (const state of ends.values()) {
    counts.set(state, (counts.get(state) ?? 0) + 1);
  }
  const parts = ORDER.filter(state => counts.has(state)).map(
    state => `${counts.get(state)} ${WORDS[state]}`
  );
  const message = `${subject} ended: ${parts.join(', ')}`;
  if (counts.has('failed')) {
    return { message, type: 'error', autoClose: false };
  }
  if (counts.has('retrying') || counts.has('cancelled')) {
    return { message, type: 'warning', autoClose: 8000 };
  }
  return { message, type: 'success', autoClose: 8000 };
}

/** An alert for one of the user's jobs: a failure stays until closed, others close by themselves. */
export function showAlert(alert: IAlertNotice, showJob: (id: string) => void): string {
  const failed = alert.event === 'failed';
  const type: Notification.TypeOptions = failed
    ? 'error'
    : alert.event === 'succeeded'
      ? 'success'
      : 'warning';
  const actions: Notification.IAction[] = alert.job_id
    ? [
        {
          label: 'Show',
          caption: `Open job ${alert.job_id} in a tab`,
          callback: () => showJob(alert.job_id)
        }
      ]
    : [];
  return Notification.emit(`Alert: ${alert.message}`, type, {
    autoClose: failed ? false : 10000,
    actions
  });
}

export namespace JobNotifier {
  export interface IOptions {
    /** Open one job in the panel. */
    showJob(id: string): void;
    /** Show several jobs in the panel (those of a sweep when `group` is given). */
    showJobs(ids: string[], group?: string): void;
    retry(id: string): void;
    /** Notices closer together than this are shown as one (ms). */
    windowMs?: number;
  }
}
