/**
 * The left-sidebar widget: the header, the cluster strip, the filters, the job list and
 * the selected job's preview (header.tsx, cluster.tsx, list.tsx, preview.tsx). A job's full detail opens in a
 * main-area tab (detail.tsx). Views render what the models hold and hand user actions
 * to IJobActions (the plugin's commands); they fetch nothing themselves.
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { trainorchIcon } from './icon';
import { IJobActions } from './jobparts';
import { ClusterStrip } from './cluster';
import { Filters, Header } from './header';
import { JobList } from './list';
import { TrainorchModel } from './model';
import { PreviewSlot } from './preview';

export const PANEL_ID = 'trainorch-panel';

export class TrainorchPanel extends ReactWidget {
  constructor(options: TrainorchPanel.IOptions) {
    super();
    this.model = options.model;
    this._actions = options.actions;
    this.id = PANEL_ID;
    this.addClass('trainorch-panel');
    this.title.icon = trainorchIcon;
    this.title.caption = 'Training jobs';
  }

  readonly model: TrainorchModel;

  protected render(): JSX.Element {
    const { model, _actions: actions } = this;
    return (
      <div className="trainorch-root">
        <Header model={model} actions={actions} />
        <ClusterStrip model={model} />
        <Filters model={model} />
        <JobList model={model} actions={actions} />
        <PreviewSlot model={model} actions={actions} />
      </div>
    );
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.model.setVisible(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.model.setVisible(false);
  }

  private _actions: IJobActions;
}

export namespace TrainorchPanel {
  export interface IOptions {
    model: TrainorchModel;
    actions: IJobActions;
  }
}
