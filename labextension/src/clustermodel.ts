/**
 * ClusterModel: the strip's figures (workers, GPUs, queue depth), read again when jobs
 * change state, and now and then for workers that come and go without any job change.
 */
import { IDisposable } from '@lumino/disposable';
import { Throttler } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient } from './api';
import { IChange, ICluster } from './types';

/** Workers come and go without job changes (adaptive scaling): read this often anyway. */
const CLUSTER_MS = 15000;
/** Changes call for a read this long after the first of a burst. */
const CLUSTER_DELAY_MS = 500;

export class ClusterModel implements IDisposable {
  constructor(options: { client: TrainorchClient }) {
    this._client = options.client;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get cluster(): ICluster | null {
    return this._cluster;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  start(): void {
    void this.refresh();
    this._interval = window.setInterval(() => this.resync(), CLUSTER_MS);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    window.clearInterval(this._interval);
    this._soon.dispose();
    Signal.clearData(this);
  }

  /** Nobody sees the strip: no reads until someone does. */
  setVisible(visible: boolean): void {
    this._visible = visible;
  }

  async refresh(): Promise<void> {
    try {
      const cluster = await this._client.cluster();
      if (!this._disposed) {
        this._cluster = cluster;
        this._changed.emit();
      }
    } catch {
      // The strip says the service is away; other failures leave the last figures.
    }
  }

  applyChanges(changes: readonly IChange[]): void {
    if (changes.some(change => change.kind === 'job')) {
      this.resync();
    }
  }

  /** Read the figures soon, folding bursts of calls into one request. */
  resync(): void {
    if (this._visible) {
      void this._soon.invoke().catch(() => undefined);
    }
  }

  private _client: TrainorchClient;
  private _cluster: ICluster | null = null;
  private _visible = false;
  private _disposed = false;
  // Not awaited: a throttler drops calls while its function runs, and a change that comes
  // during a read must still bring another one.
  private _soon = new Throttler(() => void this.refresh(), {
    limit: CLUSTER_DELAY_MS,
    edge: 'trailing'
  });
  private _interval = 0;
  private _changed = new Signal<this, void>(this);
}
