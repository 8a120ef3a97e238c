/**
 * TrainorchClient: every REST call of the panel, and whether the service answers.
 *
 * Models hold state and views render it; neither builds a URL. A read that finds the
 * service away (restarting, or the server in front of it unreachable) marks the client
 * `unavailable` until some later request gets an answer, so that every model learns of
 * an absence and of the return from one place.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { API_PATH, isUnavailable, query, requestAPI } from './request';
import { IChangePage, ICluster, IJobList, IJobView, IMe, IMetricHistory, ILogPage } from './types';

/** The list's order (`sort=` of `GET jobs`): `priority` is dispatch order. */
export type SortKey = 'newest' | 'priority';

export interface IListParams {
  /** Comma-separated states; empty for every state. */
  state: string;
  user: string;
  /** Part of the name, or the id's start. */
  q: string;
  sort: SortKey;
  limit: number;
  offset: number;
}

export class TrainorchClient {
  constructor(serverSettings: ServerConnection.ISettings = ServerConnection.makeSettings()) {
    this.serverSettings = serverSettings;
  }

  readonly serverSettings: ServerConnection.ISettings;

  /** Why the service is away (its last answer), or null while it answers. */
  get unavailable(): string | null {
    return this._unavailable;
  }

  /** The server's hint, in seconds, of when to ask again while the service is away. */
  get retryAfter(): number | null {
    return this._retryAfter;
  }

  /** The service went away or came back. */
  get availabilityChanged(): ISignal<this, void> {
    return this._availabilityChanged;
  }

  /** The Dask dashboard, through this server (see the server's `trainorch/dashboard`). */
  get dashboardUrl(): string {
    return URLExt.join(this.serverSettings.baseUrl, 'trainorch/dashboard');
  }

  /**
   * A job's MLflow run, through this server (its `trainorch/mlflow` leads to the configured
   * UI, the tracking server, or the UI it serves itself at `mlflow/`); null when untracked.
   */
  mlflowRunUrl(mlflow: { experiment_id?: string | null; run_id?: string | null }): string | null {
    if (!mlflow.experiment_id || !mlflow.run_id) {
      return null;
    }
    const query = new URLSearchParams({ experiment: mlflow.experiment_id, run: mlflow.run_id });
    return URLExt.join(this.serverSettings.baseUrl, 'trainorch/mlflow') + `?${query}`;
  }

  /** A live channel was lost: the service counts as away until a request gets an answer. */
  markUnavailable(reason: string, retryAfter: number | null = null): void {
    const changed = this._unavailable === null;
    this._unavailable = reason;
    this._retryAfter = retryAfter;
    if (changed) {
      this._availabilityChanged.emit();
    }
  }

  listJobs(params: IListParams): Promise<IJobList> {
    return this._request(`jobs${query({ ...params })}`);
  }

  /** The job with its rendered spec; another user's job as a queue row. */
  getJob(id: string): Promise<IJobView> {
    return this._request(jobPath(id));
  }

  cancel(id: string): Promise<IJobView> {
    return this._request(jobPath(id), { method: 'DELETE' });
  }

  /** Another attempt of the same job. */
  retry(id: string): Promise<IJobView> {
    return this._request(`${jobPath(id)}/retry`, { method: 'POST' });
  }

  /** A new job from the same spec. */
  rerun(id: string): Promise<IJobView> {
    return this._request(`${jobPath(id)}/rerun`, { method: 'POST' });
  }

  setPriority(id: string, priority: string): Promise<IJobView> {
    return this._request(jobPath(id), { method: 'PATCH', body: JSON.stringify({ priority }) });
  }

  metrics(id: string): Promise<IMetricHistory> {
    return this._request(`${jobPath(id)}/metrics`);
  }

  /** Log lines after the cursor `after`, of one attempt or (null) of all. */
  logs(id: string, attempt: number | null, after: number): Promise<ILogPage> {
    return this._request(`${jobPath(id)}/logs${query({ attempt, after })}`);
  }

  cluster(): Promise<ICluster> {
    return this._request('cluster');
  }

  me(): Promise<IMe> {
    return this._request('me');
  }

  /** The change feed after a cursor, without waiting for new changes. */
  changes(after: number): Promise<IChangePage> {
    return this._request(`events${query({ after, timeout: 0 })}`);
  }

  /** The push channel: changes after `after`, then each as it happens. */
  openChangeSocket(after: number): WebSocket {
    const settings = this.serverSettings;
    let url = URLExt.join(settings.wsUrl, API_PATH, 'events/ws') + `?after=${after}`;
    if (settings.token) {
      url += `&token=${encodeURIComponent(settings.token)}`;
    }
    return new settings.WebSocket(url);
  }

  private async _request<T>(path: string, init: RequestInit = {}): Promise<T> {
    try {
      const result = await requestAPI<T>(path, init, this.serverSettings);
      this._answered();
      return result;
    } catch (error) {
      if (isUnavailable(error)) {
        this.markUnavailable(error.message, error.retryAfter);
      } else {
        // A refusal (404, 403, 400) is an answer too.
        this._answered();
      }
      throw error;
    }
  }

  private _answered(): void {
    if (this._unavailable !== null) {
      this._unavailable = null;
      this._retryAfter = null;
      this._availabilityChanged.emit();
    }
  }

  private _unavailable: string | null = null;
  private _retryAfter: number | null = null;
  private _availabilityChanged = new Signal<this, void>(this);
}

function jobPath(id: string): string {
  return `jobs/${encodeURIComponent(id)}`;
}

/** The message of anything thrown. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message || String(error) : String(error);
}
