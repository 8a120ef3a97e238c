/**
 * AlertModel: the alerts an admin's rules send to the owner of a job (`"to": "owner"` in
 * TRAINORCH_ALERTS), as they arrive on the change feed (kind `alert`).
 *
 * The service shows a job's alerts to its owner and to admins; only the user's own become
 * notices here, so an admin's browser does not pop other users' alerts. Each change is told
 * about once, however it arrived (socket and feed may both bring it). `JobNotifier`'s
 * neighbour `showAlert` (notify.ts) shows them.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { IChange, IMe } from './types';

/** An alert for one of the user's jobs. */
export interface IAlertNotice {
  job_id: string;
  /** What happened, in the rule's words ("job 3f9a… failed"). */
  message: string;
  /** What the rule fired on: a job state, `queue_wait` or `log`; null when not said. */
  event: string | null;
}

/** Change numbers remembered against duplicates. */
const SEEN = 500;
/** Alerts held while who the user is is not yet known. */
const HELD = 50;

export class AlertModel {
  constructor(options: AlertModel.IOptions) {
    this._me = options.me;
    this._enabled = options.enabled;
  }

  /** An alert for one of the user's jobs. */
  get alert(): ISignal<this, IAlertNotice> {
    return this._alert;
  }

  applyChanges(changes: readonly IChange[]): void {
    for (const change of changes) {
      if (change.kind === 'alert') {
        this._take(change);
      }
    }
  }

  /** Who the user is became known: tell the alerts that came before. */
  meKnown(): void {
    const held = this._held;
    this._held = [];
    for (const change of held) {
      this._take(change);
    }
  }

  private _take(change: IChange): void {
    const me = this._me();
    if (!me) {
      if (this._held.length < HELD) {
        this._held.push(change);
      }
      return;
    }
    // The number and the time: numbers start again when the service restarts.
    const key = `${change.seq}@${change.time}`;
    if (this._seen.has(key)) {
      return;
    }
    this._seen.add(key);
    if (this._seen.size > SEEN) {
      this._seen.delete(this._seen.values().next().value as string);
    }
    // An admin sees other users' alerts on the feed: they are not theirs to be told.
    if (change.user !== me.name || !this._enabled()) {
      return;
    }
    this._alert.emit({
      job_id: change.job_id,
      message: change.message || `job ${change.job_id}: ${change.event ?? 'alert'}`,
      event: change.event ?? null
    });
  }

  private _me: () => IMe | null;
  private _enabled: () => boolean;
  private _held: IChange[] = [];
  private _seen = new Set<string>();
  private _alert = new Signal<this, IAlertNotice>(this);
}

export namespace AlertModel {
  export interface IOptions {
    /** Who the user is, once known. */
    me: () => IMe | null;
    /** Whether the user wants notifications at all (the `notify` setting is not `none`). */
    enabled: () => boolean;
  }
}
