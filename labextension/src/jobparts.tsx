/**
 * Pieces of a job that the list, the preview and the detail tab all show: its state,
 * progress, priority, place in the queue, and the buttons its `actions` allow.
 */
import {
  Button,
  HTMLSelect,
  LabIcon,
  addIcon,
  copyIcon,
  launchIcon,
  runIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import * as React from 'react';

import { stopPropagation, useSignal, useTick } from './controls';
import { JobDetailModel } from './detailmodel';
import {
  etaSeconds,
  formatDuration,
  priorityLabel,
  progressFraction,
  queueText,
  stepText
} from './format';
import { IJob, IJobRow, IJobView, PRIORITY_CLASSES, may } from './types';

/** What the buttons do; the plugin implements it with its commands. */
export interface IJobActions {
  /** Open the job's detail in a main-area tab. */
  open(id: string): void;
  /** Cancel, once the user confirms. */
  cancel(id: string): void;
  /** Another attempt of this job (same id). */
  retry(id: string): void;
  /** A new job from the same spec. */
  rerun(id: string): void;
  clone(id: string): void;
  setPriority(id: string, priority: string): void;
  refresh(): void;
  /** Open the comparison tab for these jobs. */
  compare(ids: string[]): void;
}

/** The job of a detail model, re-rendering as it changes and, while it runs, every second. */
export function useDetailJob(detail: JobDetailModel): IJobView | null {
  useSignal(detail.changed);
  const job = detail.job;
  useTick(!!job && !job.terminal);
  return job;
}

export function StateChip(props: { state: string }): JSX.Element {
  return <span className={`trainorch-state trainorch-state-${props.state}`}>{props.state}</span>;
}

export function ProgressBar(props: { job: IJob; now: number }): JSX.Element {
  const { job, now } = props;
  const fraction = progressFraction(job);
  const step = stepText(job);
  const eta = etaSeconds(job, now);
  const parts: string[] = [];
  if (step) {
    parts.push(step);
  }
  if (fraction !== null) {
    parts.push(`${Math.floor(fraction * 100)}%`);
  }
  if (eta !== null && eta > 0) {
    parts.push(`ETA ${formatDuration(eta)}`);
  }
  const show = fraction !== null || step !== '';
  return (
    <div className="trainorch-progress" title={job.progress?.message ?? undefined}>
      {show && (
        <>
          <div
            className="trainorch-progress-bar"
            role="progressbar"
            aria-valuemin={0}
            aria-valuemax={100}
            aria-valuenow={fraction === null ? undefined : Math.round(fraction * 100)}
          >
            <div
              className={`trainorch-progress-fill trainorch-progress-${job.state}`}
              style={{ width: `${((fraction ?? 0) * 100).toFixed(1)}%` }}
            />
          </div>
          <span className="trainorch-progress-text">{parts.join(' · ')}</span>
        </>
      )}
    </div>
  );
}

export function PrioritySelect(props: {
  job: IJobRow;
  actions: IJobActions;
  className?: string;
}): JSX.Element {
  const { job, actions } = props;
  const current = job.priority_class;
  const options: { value: string; label: string }[] = PRIORITY_CLASSES.map(p => ({
    value: p,
    label: p
  }));
  if (!PRIORITY_CLASSES.includes(current as (typeof PRIORITY_CLASSES)[number])) {
    options.push({ value: current, label: current });
  }
  return (
    <HTMLSelect
      className={`trainorch-priority-select ${props.className ?? ''}`}
      data-action="priority"
      title="Priority (can change until the job starts)"
      value={current}
      options={options}
      onClick={stopPropagation}
      onChange={event => actions.setPriority(job.id, event.target.value)}
    />
  );
}

/**
 * The priority: a select while the user may change it, else its label. Memoised on what
 * it shows, since a row renders again on every change of its job.
 */
export const Priority = React.memo(PriorityView, (a, b) => {
  const [x, y] = [a.job, b.job];
  return (
    a.actions === b.actions &&
    x.id === y.id &&
    x.priority_class === y.priority_class &&
    x.priority === y.priority &&
    may(x, 'set_priority') === may(y, 'set_priority')
  );
});

function PriorityView(props: { job: IJobRow; actions: IJobActions }): JSX.Element {
  const { job, actions } = props;
  return may(job, 'set_priority') ? (
    <PrioritySelect job={job} actions={actions} className="trainorch-priority" />
  ) : (
    <span
      className={`trainorch-priority trainorch-priority-${job.priority_class}`}
      title="Priority"
    >
      {priorityLabel(job)}
    </span>
  );
}

/** `#3 in queue`, for a job waiting in the service's queue. */
export function QueuePosition(props: { job: IJobRow }): JSX.Element | null {
  const text = queueText(props.job);
  return text ? (
    <span
      className="trainorch-queue-position"
      data-field="queue_position"
      title={props.job.wait_reason || 'Place in the queue: #1 is dispatched next'}
    >
      {text}
    </span>
  ) : null;
}

/** What each button says: retry and rerun are told apart by label, icon and tooltip. */
const BUTTONS: Record<string, { label: string; title: string; icon: LabIcon }> = {
  open: { label: 'Open', title: 'Open the detail and the whole log in a tab', icon: launchIcon },
  cancel: { label: 'Cancel', title: 'Cancel the job (asks first)', icon: stopIcon },
  retry: {
    label: 'Retry',
    title: 'Retry: another attempt of this job (same id, attempt count goes up)',
    icon: runIcon
  },
  rerun: {
    label: 'Rerun',
    title: 'Rerun: submit a new job from the same spec (a new id)',
    icon: addIcon
  },
  clone: {
    label: 'Clone',
    title: 'Clone into a new %%train cell of the active notebook',
    icon: copyIcon
  }
};

function ActionButton(props: {
  action: keyof typeof BUTTONS;
  labelled: boolean;
  onClick: () => void;
}): JSX.Element {
  const { label, title, icon } = BUTTONS[props.action];
  return (
    <Button
      minimal
      small
      className={props.labelled ? 'trainorch-text-button' : 'trainorch-icon-button'}
      data-action={props.action}
      title={title}
      aria-label={label}
      onClick={props.onClick}
    >
      <icon.react tag="span" />
      {props.labelled && <span className="trainorch-button-label">{label}</span>}
    </Button>
  );
}

/**
 * The buttons the job's `actions` allow (none for another user's job). A list row
 * (`compact`: icons only) leaves rerun to ended jobs, to keep room for the name.
 * Memoised on what decides the buttons, since a row renders again on every change of its job.
 */
export const JobActions = React.memo(
  JobActionsView,
  (a, b) =>
    a.actions === b.actions &&
    a.compact === b.compact &&
    a.open === b.open &&
    a.job.id === b.job.id &&
    a.job.terminal === b.job.terminal &&
    a.job.actions.join() === b.job.actions.join()
);

function JobActionsView(props: {
  job: IJobRow;
  actions: IJobActions;
  compact?: boolean;
  /** Whether to offer opening the job's tab. */
  open?: boolean;
}): JSX.Element {
  const { job, actions, compact = false } = props;
  const labelled = !compact;
  return (
    <span className="trainorch-actions" onClick={stopPropagation}>
      {props.open && (
        <ActionButton action="open" labelled={labelled} onClick={() => actions.open(job.id)} />
      )}
      {may(job, 'cancel') && (
        <ActionButton action="cancel" labelled={labelled} onClick={() => actions.cancel(job.id)} />
      )}
      {may(job, 'retry') && (
        <ActionButton action="retry" labelled={labelled} onClick={() => actions.retry(job.id)} />
      )}
      {may(job, 'rerun') && (job.terminal || !compact) && (
        <ActionButton action="rerun" labelled={labelled} onClick={() => actions.rerun(job.id)} />
      )}
      {may(job, 'read') && !compact && (
        <ActionButton action="clone" labelled={labelled} onClick={() => actions.clone(job.id)} />
      )}
    </span>
  );
}
