/**
 * TrainorchModel: the panel's models, wired together.
 *
 * One API client (every REST call), one change stream (socket, or the polled feed), and
 * the models that hold what views show: the sidebar's list and cluster strip, the detail
 * of each job shown (the sidebar's preview and each job's main-area tab), the comparison,
 * the notices and the alerts.
 * Each batch of changes goes to each model once. Views read the models and listen to
 * their signals; they never fetch by themselves.
 */
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { AlertModel } from './alertmodel';
import { TrainorchClient } from './api';
import { ChangeStream } from './changes';
import { ClusterModel } from './clustermodel';
import { CompareModel } from './comparemodel';
import { JobDetailModel } from './detailmodel';
import { JobListModel } from './listmodel';
import { NoticeModel } from './noticemodel';
import { IChange, IJobView, IMe, hasQuota } from './types';

/** Log lines the sidebar's preview keeps (it shows the last few). */
const PREVIEW_LOG_LINES = 20;
/** Log lines a job's tab keeps: the view is virtualised, so only memory bounds this. */
const TAB_LOG_LINES = 20000;

export class TrainorchModel implements IDisposable {
  constructor(options: TrainorchModel.IOptions = {}) {
    const client = new TrainorchClient(options.serverSettings);
    this.client = client;
    this.changes = new ChangeStream({ client, refreshInterval: options.refreshInterval });
    this.list = new JobListModel({ client, pageSize: options.pageSize });
    this.cluster = new ClusterModel({ client });
    this.compare = new CompareModel({ client, checked: () => this.list.checked });
    this.notices = new NoticeModel({
      client,
      me: () => this._me,
      serverNow: () => this.changes.serverNow()
    });
    this.alerts = new AlertModel({
      me: () => this._me,
      enabled: () => this.notices.notifyMode !== 'none'
    });
    this.changes.changed.connect(this._onChanges, this);
    this.changes.resynced.connect(this._onResync, this);
    this.list.changed.connect(() => this.notices.know(this.list.jobs.map(job => job.id)));
  }

  readonly client: TrainorchClient;
  readonly changes: ChangeStream;
  readonly list: JobListModel;
  readonly cluster: ClusterModel;
  readonly compare: CompareModel;
  readonly notices: NoticeModel;
  readonly alerts: AlertModel;

  /** The job previewed in the sidebar changed (another one, or none). */
  get selectionChanged(): ISignal<this, void> {
    return this._selectionChanged;
  }

  /** `me` became known. */
  get meChanged(): ISignal<this, void> {
    return this._meChanged;
  }

  get selectedId(): string | null {
    return this._preview?.jobId ?? null;
  }

  /** The sidebar's preview of the selected job. */
  get preview(): JobDetailModel | null {
    return this._preview;
  }

  /** Who the authenticated user is (`GET me`), once known. */
  get me(): IMe | null {
    return this._me;
  }

  /** The authenticated user's name, or empty until it is known. */
  get mineUser(): string {
    return this._me?.name ?? '';
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  start(): void {
    if (this._started || this._disposed) {
      return;
    }
    this._started = true;
    this.changes.start();
    this.list.start();
    this.cluster.start();
    this.cluster.changed.connect(this._onClusterChanged, this);
    void this._loadMe();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this.changes.dispose();
    this.list.dispose();
    this.cluster.dispose();
    this._preview?.dispose();
    for (const detail of this._details) {
      detail.dispose();
    }
    Signal.clearData(this);
  }

  /** The sidebar tells whether anyone can see it. */
  setVisible(visible: boolean): void {
    this._visible = visible;
    this.list.setVisible(visible);
    this.cluster.setVisible(visible);
    this._updateStreamVisibility();
  }

  /** Preview one job in the sidebar (null closes the preview). */
  select(id: string | null): void {
    if (id === this.selectedId) {
      return;
    }
    this._preview?.dispose();
    this._preview = id ? this._newDetail(id, PREVIEW_LOG_LINES) : null;
    this._selectionChanged.emit();
  }

  /** A detail model for a job's tab; the tab disposes of it when it closes. */
  openDetail(id: string): JobDetailModel {
    const detail = this._newDetail(id, TAB_LOG_LINES);
    this._details.add(detail);
    this._updateStreamVisibility();
    return detail;
  }

  closeDetail(detail: JobDetailModel): void {
    this._details.delete(detail);
    detail.dispose();
    this._updateStreamVisibility();
  }

  /** A job found on the page or in a detail, without a request. */
  findJob(id: string): IJobView | null {
    const shown = [this._preview, ...this._details].find(d => d?.jobId === id && d.job);
    return shown?.job ?? this.list.findJob(id);
  }

  // -- actions: each watches the job (its end is told about) and shows the answer at once.

  cancel(id: string): Promise<IJobView> {
    return this._act(id, () => this.client.cancel(id));
  }

  retry(id: string): Promise<IJobView> {
    return this._act(id, () => this.client.retry(id));
  }

  setPriority(id: string, priority: string): Promise<IJobView> {
    return this._act(id, () => this.client.setPriority(id, priority));
  }

  /** A new job from the same spec; it is previewed. */
  async rerun(id: string): Promise<IJobView> {
    const job = await this.client.rerun(id);
    this.notices.watch(job.id);
    this.select(job.id);
    this.list.resync();
    return job;
  }

  private async _act(id: string, request: () => Promise<IJobView>): Promise<IJobView> {
    this.notices.watch(id);
    const job = await request();
    this.list.put(job);
    for (const detail of [this._preview, ...this._details]) {
      detail?.put(job);
    }
    this.list.resync();
    return job;
  }

  private _newDetail(id: string, logLines: number): JobDetailModel {
    const detail = new JobDetailModel({
      jobId: id,
      client: this.client,
      job: this.findJob(id),
      logLines
    });
    detail.start();
    return detail;
  }

  private _onChanges(_: ChangeStream, changes: readonly IChange[]): void {
    this.list.applyChanges(changes);
    this.cluster.applyChanges(changes);
    this.notices.applyChanges(changes);
    this.alerts.applyChanges(changes);
    for (const detail of [this._preview, ...this._details]) {
      detail?.applyChanges(changes);
    }
  }

  private _onResync(): void {
    this.list.resync();
    this.cluster.resync();
    for (const detail of [this._preview, ...this._details]) {
      detail?.resync();
    }
    if (!this._me) {
      void this._loadMe();
    }
  }

  /** Polling stands by while neither the sidebar nor a job's tab is open. */
  private _updateStreamVisibility(): void {
    this.changes.setVisible(this._visible || this._details.size > 0);
  }

  /** What a user's quotas use changes with the cluster's figures: read it again then. */
  private _onClusterChanged(): void {
    if (this._me && hasQuota(this._me)) {
      void this._loadMe();
    }
  }

  private async _loadMe(): Promise<void> {
    try {
      const me = await this.client.me();
      if (!this._disposed && me && typeof me.name === 'string') {
        this._me = me;
        this._meChanged.emit();
        this.alerts.meKnown();
      }
    } catch {
      // Away: read again when the service is back (resync). Refused: leave it.
    }
  }

  private _preview: JobDetailModel | null = null;
  private _details = new Set<JobDetailModel>();
  private _me: IMe | null = null;
  private _visible = false;
  private _started = false;
  private _disposed = false;
  private _selectionChanged = new Signal<this, void>(this);
  private _meChanged = new Signal<this, void>(this);
}

export namespace TrainorchModel {
  export interface IOptions {
    serverSettings?: ServerConnection.ISettings;
    /** Jobs per page of the list (the only ones rendered). */
    pageSize?: number;
    /** Seconds between feed reads when the socket is unavailable. */
    refreshInterval?: number;
  }
}
