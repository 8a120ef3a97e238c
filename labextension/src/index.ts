import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  MainAreaWidget,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import { errorMessage } from './api';
import { COMPARE_ID, createCompareTab } from './charts';
import { JobDetailWidget, createDetailTab } from './detail';
import { cloneCellSource } from './format';
import { trainorchIcon } from './icon';
import { IJobActions } from './jobparts';
import { TrainorchModel } from './model';
import { NotifyMode } from './noticemodel';
import { JobNotifier, showAlert } from './notify';
import { PANEL_ID, TrainorchPanel } from './panel';
import { JobAction, isRestricted, may } from './types';

const PLUGIN_ID = 'jupyter-trainorch:plugin';

namespace CommandIDs {
  export const openPanel = 'trainorch:open-panel';
  export const openJob = 'trainorch:open-job';
  export const refresh = 'trainorch:refresh';
  export const cancelJob = 'trainorch:cancel-job';
  export const retryJob = 'trainorch:retry-job';
  export const cloneJob = 'trainorch:clone-job';
  export const setPriority = 'trainorch:set-priority';
  export const rerunJob = 'trainorch:rerun-job';
  export const compareJobs = 'trainorch:compare-jobs';
}

const CATEGORY = 'Training Jobs';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'A sidebar for jupyter-trainorch training jobs: list, logs, actions and the cluster.',
  autoStart: true,
  optional: [ILayoutRestorer, ISettingRegistry, INotebookTracker, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    notebooks: INotebookTracker | null,
    palette: ICommandPalette | null
  ) => {
    const { commands, shell } = app;
    const model = new TrainorchModel({ serverSettings: app.serviceManager.serverSettings });

    /** The job a command acts on: its `id` argument, else the one previewed in the sidebar. */
    const targetId = (args: ReadonlyPartialJSONObject): string | null =>
      typeof args.id === 'string' && args.id ? args.id : model.selectedId;

    /** Whether the command's job allows `action` (a job not at hand is left to the server). */
    const allows = (args: ReadonlyPartialJSONObject, action: JobAction): boolean => {
      const id = targetId(args);
      const job = id ? model.findJob(id) : null;
      return !!id && (!job || may(job, action));
    };

    /** Open jobs' tabs, by job id: opening a job again activates its tab. */
    const detailTabs = new Map<string, MainAreaWidget<JobDetailWidget>>();

    const actions: IJobActions = {
      open: id => void commands.execute(CommandIDs.openJob, { id }),
      cancel: id => void commands.execute(CommandIDs.cancelJob, { id }),
      retry: id => void commands.execute(CommandIDs.retryJob, { id }),
      clone: id => void commands.execute(CommandIDs.cloneJob, { id }),
      setPriority: (id, priority) =>
        void commands.execute(CommandIDs.setPriority, { id, priority }),
      refresh: () => void commands.execute(CommandIDs.refresh),
      rerun: id => void commands.execute(CommandIDs.rerunJob, { id }),
      compare: ids => void commands.execute(CommandIDs.compareJobs, { ids })
    };

    let compareTab: ReturnType<typeof createCompareTab> | null = null;

    const panel = new TrainorchPanel({ model, actions });
    shell.add(panel, 'left', { rank: 650 });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show Training Jobs',
      caption: 'Open the training jobs sidebar',
      icon: trainorchIcon,
      execute: () => shell.activateById(PANEL_ID)
    });

    commands.addCommand(CommandIDs.openJob, {
      label: args => (args.id ? `Open Job ${args.id}` : 'Open Selected Training Job'),
      caption: 'Open a training job in a tab: summary, attempts, metrics, spec and the whole log',
      icon: trainorchIcon,
      isEnabled: args => !!targetId(args),
      execute: args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        let tab = detailTabs.get(id);
        if (!tab || tab.isDisposed) {
          tab = createDetailTab(model, id, actions);
          detailTabs.set(id, tab);
          tab.disposed.connect(() => detailTabs.delete(id));
          shell.add(tab, 'main');
        }
        shell.activateById(tab.id);
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Training Jobs',
      caption: 'Read the job list and the cluster again',
      execute: () => Promise.all([model.list.refresh(), model.cluster.refresh()])
    });

    commands.addCommand(CommandIDs.cancelJob, {
      label: args => (args.id ? `Cancel Job ${args.id}` : 'Cancel Selected Training Job'),
      caption: 'Cancel a training job (stops it if it runs)',
      isEnabled: args => allows(args, 'cancel'),
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        const job = model.findJob(id);
        const answer = await showDialog({
          title: 'Cancel training job?',
          body: `${job ? `${job.name} (${id})` : `Job ${id}`} stops if it runs; its log and metrics so far are kept.`,
          buttons: [
            Dialog.cancelButton({ label: 'Keep running' }),
            Dialog.warnButton({ label: 'Cancel job' })
          ]
        });
        if (!answer.button.accept) {
          return;
        }
        try {
          await model.cancel(id);
        } catch (error) {
          Notification.error(`Could not cancel job ${id}: ${errorMessage(error)}`, {
            autoClose: 8000
          });
        }
      }
    });

    commands.addCommand(CommandIDs.retryJob, {
      label: args => (args.id ? `Retry Job ${args.id}` : 'Retry Selected Training Job'),
      caption: 'Another attempt of a failed or cancelled training job (same job, same id)',
      isEnabled: args => allows(args, 'retry'),
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        try {
          await model.retry(id);
        } catch (error) {
          Notification.error(`Could not retry job ${id}: ${errorMessage(error)}`, {
            autoClose: 8000
          });
        }
      }
    });

    commands.addCommand(CommandIDs.rerunJob, {
      label: args => (args.id ? `Rerun Job ${args.id}` : 'Rerun Selected Training Job'),
      caption: 'A new training job from the same spec: same code and params, a new id',
      isEnabled: args => allows(args, 'rerun'),
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        try {
          await model.rerun(id);
          shell.activateById(PANEL_ID);
        } catch (error) {
          Notification.error(`Could not rerun job ${id}: ${errorMessage(error)}`, {
            autoClose: 8000
          });
        }
      }
    });

    commands.addCommand(CommandIDs.compareJobs, {
      label: 'Compare Selected Training Jobs',
      caption: 'Params, final metrics and metric charts of the selected jobs side by side',
      isEnabled: args => (Array.isArray(args.ids) ? args.ids.length : model.list.checked.size) >= 2,
      execute: args => {
        const ids = Array.isArray(args.ids)
          ? args.ids.filter((id): id is string => typeof id === 'string')
          : [...model.list.checked];
        if (ids.length < 2) {
          return;
        }
        if (!compareTab || compareTab.isDisposed) {
          compareTab = createCompareTab(model.compare);
        }
        if (!compareTab.isAttached) {
          shell.add(compareTab, 'main');
        }
        shell.activateById(COMPARE_ID);
        model.list.setAllChecked(ids);
        void model.compare.loadCompare(ids);
      }
    });

    commands.addCommand(CommandIDs.setPriority, {
      label: args => `Set Priority to ${args.priority ?? '…'}`,
      caption: 'Change the priority of a job that has not started',
      isEnabled: args => allows(args, 'set_priority'),
      execute: async args => {
        const id = targetId(args);
        const priority = typeof args.priority === 'string' ? args.priority : '';
        if (!id || !priority) {
          return;
        }
        try {
          await model.setPriority(id, priority);
        } catch (error) {
          Notification.error(`Could not change the priority of job ${id}: ${errorMessage(error)}`, {
            autoClose: 8000
          });
          // The select shows what was picked; put it back to what the server holds.
          void model.list.refresh();
        }
      }
    });

    commands.addCommand(CommandIDs.cloneJob, {
      label: 'Clone Training Job into a Cell',
      caption: 'Insert a %%train cell that submits this job again, below the active cell',
      isEnabled: args => allows(args, 'read') && !!notebooks?.currentWidget,
      execute: async args => {
        const id = targetId(args);
        if (!id) {
          return;
        }
        const current = notebooks?.currentWidget;
        if (!current) {
          Notification.warning('Open a notebook first: the job is cloned into a new cell of it.', {
            autoClose: 6000
          });
          return;
        }
        let text: string;
        try {
          const job = await model.client.getJob(id);
          if (isRestricted(job)) {
            throw new Error(`it belongs to ${job.user}; only its owner and admins see its code`);
          }
          text = cloneCellSource(job);
        } catch (error) {
          Notification.error(`Could not read job ${id}: ${errorMessage(error)}`, {
            autoClose: 8000
          });
          return;
        }
        const notebook = current.content;
        NotebookActions.insertBelow(notebook);
        // The new cell takes the notebook's default type, which may be markdown.
        if (notebook.activeCell && notebook.activeCell.model.type !== 'code') {
          NotebookActions.changeCellType(notebook, 'code');
        }
        notebook.activeCell?.model.sharedModel.setSource(text);
        shell.activateById(current.id);
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.openPanel,
        CommandIDs.openJob,
        CommandIDs.refresh,
        CommandIDs.cancelJob,
        CommandIDs.retryJob,
        CommandIDs.rerunJob,
        CommandIDs.compareJobs,
        CommandIDs.cloneJob
      ]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    // A %%train cell run here: the job that appears next was submitted from this browser.
    NotebookActions.executionScheduled.connect((_, { cell }) => {
      if (cell.model.type === 'code' && /^\s*%%train\b/.test(cell.model.sharedModel.getSource())) {
        model.notices.expectSubmission();
      }
    });

    /** The jobs a grouped notification speaks of: the user's, all states, those ticked. */
    const showJobs = (ids: string[]): void => {
      if (ids.length === 1) {
        actions.open(ids[0]);
        return;
      }
      model.select(null);
      model.list.setQuery({ user: model.mineUser, state: 'all', search: '', page: 0 });
      model.list.setAllChecked(ids);
      shell.activateById(PANEL_ID);
    };
    const notifier = new JobNotifier({ showJob: actions.open, showJobs, retry: actions.retry });
    model.notices.notice.connect((_, notice) => notifier.add(notice));
    model.alerts.alert.connect((_, alert) => void showAlert(alert, actions.open));

    const ready = settingRegistry
      ? settingRegistry
          .load(PLUGIN_ID)
          .then(settings => {
            const apply = (): void => {
              model.changes.setRefreshInterval(settings.get('refreshInterval').composite as number);
              model.notices.setNotifyMode(settings.get('notify').composite as NotifyMode);
            };
            apply();
            settings.changed.connect(apply);
            const state = settings.get('defaultStateFilter').composite as string;
            if (state && state !== model.list.query.state) {
              model.list.setQuery({ state });
            }
          })
          .catch(reason => {
            console.error(`Failed to load the settings of ${PLUGIN_ID}.`, reason);
          })
      : Promise.resolve();
    void ready.then(() => {
      model.start();
      model.setVisible(panel.isVisible);
    });
  }
};

export default plugin;
