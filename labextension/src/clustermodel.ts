/**
 * ClusterModel: the strip's figures (workers, GPUs, queue depth), read again when jobs
 * change state, and now and then for workers that come and go without any job change.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient } from './api';
import { IChange, ICluster } from './types';

/** Workers come and go without job changes (adaptive scaling): read this often anyway. */
const CLUSTER_MS = 15000;
/** Reads that changes call for are at least this far apart. */
const CLUSTER_GAP_MS = 1000;

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
    window.clearTimeout(this._timer);
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
    this._lastRead = Date.now();
  }

  applyChanges(changes: readonly IChange[]): void {
    if (changes.some(change => change.kind === 'job')) {
      this.resync();
    }
  }

  /** Read the figures soon, folding bursts of calls into one request. */
  resync(): void {
    if (!this._visible || this._timer) {
      return;
    }
    const wait = Math.max(200, this._lastRead + CLUSTER_GAP_MS - Date.now());
    this._timer = window.setTimeout(() => {
      this._timer = 0;
      void this.refresh();
    }, wait);
  }

  private _client: TrainorchClient;
  private _cluster: ICluster | null = null;
  private _visible = false;
  private _disposed = false;
  private _lastRead = 0;
  private _timer = 0;
  private _interval = 0;
  private _changed = new Signal<this, void>(this);
}
