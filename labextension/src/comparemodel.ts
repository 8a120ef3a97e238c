/**
 * CompareModel: the jobs of the comparison tab and their metric histories.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { TrainorchClient, errorMessage } from './api';
import { IJob, IMetricHistory, isRestricted } from './types';

export class CompareModel {
  constructor(options: CompareModel.IOptions) {
    this._client = options.client;
    this._checked = options.checked;
  }

  /** The compared jobs or their metric histories changed. */
  get compareChanged(): ISignal<this, void> {
    return this._changed;
  }

  get compareJobs(): readonly IJob[] {
    return this._jobs;
  }

  get compareMetrics(): Readonly<Record<string, IMetricHistory>> {
    return this._metrics;
  }

  get compareLoading(): boolean {
    return this._loading;
  }

  get compareError(): string | null {
    return this._error;
  }

  /** Read the jobs to compare (the last ones, else those ticked) and their metric histories. */
  async loadCompare(ids?: string[]): Promise<void> {
    const wanted = ids ?? (this._ids.length ? this._ids : [...this._checked()]);
    this._ids = wanted;
    this._loading = true;
    this._error = null;
    this._changed.emit();
    const token = ++this._token;
    try {
      const jobs = (await Promise.all(wanted.map(id => this._client.getJob(id)))).map(job => {
        if (isRestricted(job)) {
          throw new Error(
            `Job ${job.id} belongs to ${job.user}: only its owner and admins see its metrics.`
          );
        }
        return job;
      });
      const histories = await Promise.all(
        wanted.map(id =>
          this._client.metrics(id).catch((): IMetricHistory => ({ job_id: id, attempts: [] }))
        )
      );
      if (token !== this._token) {
        return;
      }
      this._jobs = jobs;
      this._metrics = Object.fromEntries(wanted.map((id, i) => [id, histories[i]]));
    } catch (error) {
      if (token !== this._token) {
        return;
      }
      this._error = errorMessage(error);
    }
    this._loading = false;
    this._changed.emit();
  }

  private _client: TrainorchClient;
  private _checked: () => ReadonlySet<string>;
  private _ids: string[] = [];
  private _jobs: IJob[] = [];
  private _metrics: Record<string, IMetricHistory> = {};
  private _loading = false;
  private _error: string | null = null;
  private _token = 0;
  private _changed = new Signal<this, void>(this);
}

export namespace CompareModel {
  export interface IOptions {
    client: TrainorchClient;
    /** The jobs ticked in the list: compared when no ids are given. */
    checked: () => ReadonlySet<string>;
  }
}
