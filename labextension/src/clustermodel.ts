/**
 * ClusterModel: the strip's figures (workers, GPUs, the queue, utilisation, autoscaling),
 * read again when jobs change state or the pool is resized (a `cluster` change), and now and
 * then for workers that come and go and for their utilisation.
 */
import { IDisposable } from '@lumino/disposable';
import { Throttler } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient } from './api';
import { IChange, ICluster } from './types';

/** Workers come and go without job changes (adaptive scaling): read this often anyway. */
const CLUSTER_MS = 15000;
/** While the workers' utilisation is shown: as often as the service samples it. */
const DETAILED_MS = 5000;
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

  /** Whether the workers' utilisation is shown (in the strip's details). */
  get detailed(): boolean {
    return this._detailed;
  }

  start(): void {
    this._started = true;
    void this.refresh();
    this._schedule();
  }

  /** The workers' utilisation is shown: read the figures as often as it is sampled. */
  setDetailed(detailed: boolean): void {
    if (this._detailed === detailed) {
      return;
    }
    this._detailed = detailed;
    if (this._started && !this._disposed) {
      this._schedule();
      if (detailed) {
        this.resync();
      }
    }
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

  /** A job changed state or the pool is being resized: the figures moved. */
  applyChanges(changes: readonly IChange[]): void {
    if (changes.some(change => change.kind === 'job' || change.kind === 'cluster')) {
      this.resync();
    }
  }

  /** Read the figures soon, folding bursts of calls into one request. */
  resync(): void {
    if (this._visible) {
      void this._soon.invoke().catch(() => undefined);
    }
  }

  private _schedule(): void {
    window.clearInterval(this._interval);
    const every = this._detailed ? DETAILED_MS : CLUSTER_MS;
    this._interval = window.setInterval(() => this.resync(), every);
  }

  private _client: TrainorchClient;
  private _cluster: ICluster | null = null;
  private _visible = false;
  private _started = false;
  private _detailed = false;
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
