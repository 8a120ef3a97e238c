/**
 * ChangeStream: how the panel learns that something changed.
 *
 * Changes arrive through the push channel (`events/ws`). When the socket cannot be
 * opened, or while the service is away, a lumino `Poll` reads the change feed instead:
 * at the configured interval, backing off while reads fail, standing by while the
 * socket is open or nobody can see the panel. Changes are handed on in batches, one per
 * animation frame, so that a burst of hundreds costs one pass of each model, not one each.
 *
 * When the change numbering shows that the service restarted, when a socket reopens
 * after a gap, or when the service answers again after an absence, `resynced` tells the
 * models to read again everything they show.
 */
import { IDisposable } from '@lumino/disposable';
import { IPoll, Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient } from './api';
import { toSeconds } from './format';
import { IChange, IProgress } from './types';

/**
 * How changes reach the panel: `reconnecting` while the service does not answer (it
 * restarts, or the live channel just closed) and reads are retried with backoff.
 */
export type Connection = 'connecting' | 'live' | 'polling' | 'reconnecting';

/** The first socket carries only changes from now on; the list read that follows covers the past. */
const LIVE_ONLY = Number.MAX_SAFE_INTEGER;
/** Asking a service that does not answer: from this interval, backing off up to the cap. */
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 15000;
/** The socket's own reconnection backoff cap (an answer from the service reopens it at once). */
const SOCKET_MAX_MS = 30000;
/** Without animation frames (a background tab), batches are handed on this often. */
const HIDDEN_BATCH_MS = 100;

export class ChangeStream implements IDisposable {
  constructor(options: ChangeStream.IOptions) {
    this._client = options.client;
    this._refreshMs = Math.max(1, options.refreshInterval ?? 5) * 1000;
    this._poll = new Poll({
      auto: false,
      name: 'trainorch:changes',
      factory: () => this._readFeed(),
      frequency: this._frequency(),
      standby: () =>
        !this._visible || (this._socketOpen && this._client.unavailable === null)
          ? true
          : 'when-hidden'
    });
    this._client.availabilityChanged.connect(this._onAvailability, this);
  }

  /** A batch of changes, in order. */
  get changed(): ISignal<this, readonly IChange[]> {
    return this._changed;
  }

  /** Read again everything shown: changes may have been missed. */
  get resynced(): ISignal<this, void> {
    return this._resynced;
  }

  get connectionChanged(): ISignal<this, Connection> {
    return this._connectionChanged;
  }

  get connection(): Connection {
    return this._connection;
  }

  get isDisposed(): boolean {
    return this._poll.isDisposed;
  }

  /** Server time in epoch seconds, corrected by the clock skew seen in changes. */
  serverNow(): number {
    return Date.now() / 1000 + (this._clockOffset ?? 0);
  }

  start(): void {
    if (this._started || this.isDisposed) {
      return;
    }
    this._started = true;
    this._connect();
    void this._poll.start();
  }

  /** Whether anyone sees the panel: the fallback polling stands by while not. */
  setVisible(visible: boolean): void {
    if (this._visible !== visible) {
      this._visible = visible;
      if (visible && this._started) {
        void this._poll.refresh();
      }
    }
  }

  setRefreshInterval(seconds: number): void {
    this._refreshMs = Math.max(1, seconds || 5) * 1000;
    this._poll.frequency = this._frequency();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    window.clearTimeout(this._reconnectTimer);
    window.clearTimeout(this._batchTimer);
    window.cancelAnimationFrame(this._batchFrame);
    if (this._socket) {
      this._socket.onclose = null;
      this._socket.close();
      this._socket = null;
    }
    Signal.clearData(this);
  }

  private _frequency(): IPoll.Frequency {
    if (this._client.unavailable === null) {
      return {
        interval: this._refreshMs,
        backoff: true,
        max: Math.max(this._refreshMs * 12, 60000)
      };
    }
    // Never sooner than the service asked (its `Retry-After`).
    const interval = Math.max(RECONNECT_MIN_MS, (this._client.retryAfter ?? 0) * 1000);
    return { interval, backoff: true, max: Math.max(RECONNECT_MAX_MS, interval) };
  }

  private _onAvailability(): void {
    this._poll.frequency = this._frequency();
    this._updateConnection();
    if (this._client.unavailable !== null) {
      void this._poll.refresh();
      return;
    }
    if (!this._socketOpen && this._started) {
      // Do not wait for the socket's backoff: the service answers now.
      this._reconnectAttempts = 0;
      this._connect();
    }
    this._resync();
  }

  // -- the socket ----------------------------------------------------------------------

  private _connect(): void {
    if (this.isDisposed || this._socket) {
      return;
    }
    window.clearTimeout(this._reconnectTimer);
    let socket: WebSocket;
    try {
      socket = this._client.openChangeSocket(this._lastSeq ?? LIVE_ONLY);
    } catch {
      this._socketLost(false);
      return;
    }
    this._socket = socket;
    this._socketSeq = null;
    socket.onopen = () => {
      this._reconnectAttempts = 0;
      this._socketOpen = true;
      this._updateConnection();
      // Whatever happened while the socket was down is in the lists, not in the replay
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
   * service goes away: it counts as away until a read gets an answer.
   */
  private _socketLost(wasOpen: boolean): void {
    if (this.isDisposed) {
      return;
    }
    this._socketFailed = true;
    if (wasOpen) {
      this._client.markUnavailable('The live channel to the trainorch service closed.');
    }
    this._updateConnection();
    void this._poll.refresh();
    const delay =
      Math.min(SOCKET_MAX_MS, 1000 * 2 ** this._reconnectAttempts) * (0.75 + Math.random() / 2);
    this._reconnectAttempts = Math.min(this._reconnectAttempts + 1, 10);
    window.clearTimeout(this._reconnectTimer);
    this._reconnectTimer = window.setTimeout(() => this._connect(), delay);
  }

  /**
   * Within one connection numbers grow (a change replayed and also pushed while the
   * socket opened comes twice: the second is dropped). The first message of a new
   * connection numbered at or below the last one seen means the service restarted.
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
    this._take(change);
  }

  // -- the feed --------------------------------------------------------------------------

  /** One read of the change feed (rejects while the service is away: the poll backs off). */
  private async _readFeed(): Promise<void> {
    const page = await this._client.changes(this._lastSeq ?? LIVE_ONLY);
    if (this.isDisposed) {
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
      this._take(change);
    }
    this._lastSeq = Math.max(this._lastSeq ?? 0, page.last);
  }

  // -- batches ---------------------------------------------------------------------------

  private _take(change: IChange): void {
    // Every change names its job, but an autoscaling decision (kind `cluster`).
    if (typeof change.seq !== 'number' || (!change.job_id && change.kind !== 'cluster')) {
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
    this._pending.push(change);
    if (this._batchScheduled) {
      return;
    }
    this._batchScheduled = true;
    // Animation frames stop in background tabs; the lists should be current on return.
    if (document.visibilityState === 'hidden') {
      this._batchTimer = window.setTimeout(this._flush, HIDDEN_BATCH_MS);
    } else {
      this._batchFrame = window.requestAnimationFrame(this._flush);
    }
  }

  private _flush = (): void => {
    this._batchScheduled = false;
    const batch = this._pending;
    this._pending = [];
    if (batch.length && !this.isDisposed) {
      this._changed.emit(batch);
    }
  };

  private _resync(): void {
    if (!this.isDisposed) {
      this._resynced.emit();
    }
  }

  private _updateConnection(): void {
    const connection: Connection =
      this._client.unavailable !== null
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

  private _client: TrainorchClient;
  private _poll: Poll;
  private _refreshMs: number;
  private _visible = false;
  private _started = false;
  private _connection: Connection = 'connecting';
  private _socket: WebSocket | null = null;
  private _socketOpen = false;
  /** Some socket closed or could not be opened (then the feed is polled). */
  private _socketFailed = false;
  private _reconnected = false;
  private _reconnectAttempts = 0;
  private _reconnectTimer = 0;
  /** The last change number seen from the service; null before any. */
  private _lastSeq: number | null = null;
  /** The last change number of the current socket; null before its first message. */
  private _socketSeq: number | null = null;
  private _clockOffset: number | null = null;
  private _pending: IChange[] = [];
  private _batchScheduled = false;
  private _batchFrame = 0;
  private _batchTimer = 0;
  private _changed = new Signal<this, readonly IChange[]>(this);
  private _resynced = new Signal<this, void>(this);
  private _connectionChanged = new Signal<this, Connection>(this);
}

export namespace ChangeStream {
  export interface IOptions {
    client: TrainorchClient;
    /** Seconds between feed reads while there is no socket. */
    refreshInterval?: number;
  }
}

/**
 * What a change carries beyond the contract's fields (`Change` allows extra ones): the
 * progress report, the attempt and the new priority, each only when it has its shape.
 */
export function changeExtra(change: IChange): {
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
