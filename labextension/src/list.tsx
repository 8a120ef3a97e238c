/**
 * The sidebar's list: the page of jobs, grouped by sweep, with the pager.
 *
 * Rows are memoised by their job object (the list model gives a changed job a new
 * object and keeps unchanged ones), so a burst of changes re-renders the rows it names,
 * not the page.
 */
import { Button } from '@jupyterlab/ui-components';
import * as React from 'react';

import { EverySecond, stopPropagation, useSignal } from './controls';
import { attemptsText, elapsedSeconds, formatDuration, gpusHeld, sweepLabel } from './format';
import {
  IJobActions,
  JobActions,
  Priority,
  ProgressBar,
  QueuePosition,
  StateChip
} from './jobparts';
import { JobListModel } from './listmodel';
import { TrainorchModel } from './model';
import { IJob, IJobRow, IQueueRow, isRestricted, may } from './types';

/** What an empty list says: how to submit a first job, or that the filters hide them all. */
function EmptyList(props: { list: JobListModel }): JSX.Element {
  const { list } = props;
  const q = list.query;
  const filtered = q.state !== 'all' || q.user.trim() !== '' || q.search.trim() !== '';
  if (!list.loaded) {
    return <div className="trainorch-empty">{list.error ? '' : 'Loading…'}</div>;
  }
  if (filtered) {
    return <div className="trainorch-empty">No jobs match these filters.</div>;
  }
  return (
    <div className="trainorch-empty trainorch-intro" data-field="empty-intro">
      <p>No training jobs yet.</p>
      <p>
        To submit one, run a notebook cell that starts with <code>%%train</code> after{' '}
        <code>%load_ext jupyter_trainorch</code>, for example:
      </p>
      <pre className="trainorch-code">{'%%train --gpus 1 lr=3e-4\nfit(build(lr))'}</pre>
      <p>
        It appears here as it queues and runs, with its log and metrics. From a terminal,{' '}
        <code>trainorch submit</code> does the same.
      </p>
    </div>
  );
}

export function JobList(props: { model: TrainorchModel; actions: IJobActions }): JSX.Element {
  const { model, actions } = props;
  const list = model.list;
  useSignal(list.changed);
  useSignal(model.selectionChanged);
  const jobs = list.jobs;
  const q = list.query;
  const first = list.total ? q.page * list.pageSize + 1 : 0;
  const last = Math.min(list.total, (q.page + 1) * list.pageSize);
  const checked = [...list.checked];
  const row = (job: IJobRow): JSX.Element => (
    <JobRow
      key={job.id}
      job={job}
      selected={job.id === model.selectedId}
      checked={list.checked.has(job.id)}
      model={model}
      actions={actions}
    />
  );
  return (
    <div className="trainorch-list-section">
      {checked.length > 0 && (
        <div className="trainorch-compare-bar">
          <span>{checked.length} selected</span>
          <Button
            small
            data-action="compare"
            disabled={checked.length < 2}
            title={checked.length < 2 ? 'Select at least two jobs' : 'Compare the selected jobs'}
            onClick={() => actions.compare(checked)}
          >
            Compare
          </Button>
          <Button
            minimal
            small
            data-action="clear-selection"
            onClick={() => list.setAllChecked([])}
          >
            Clear
          </Button>
        </div>
      )}
      {list.error && (
        <div className="trainorch-error" role="alert">
          {list.error}
        </div>
      )}
      <div className="trainorch-list" role="list" data-search={list.query.search}>
        {jobs.length === 0 && <EmptyList list={list} />}
        {groupJobs(jobs).map(item =>
          item.group ? (
            <JobGroup
              key={`group:${item.group}`}
              group={item.group}
              jobs={item.jobs}
              actions={actions}
            >
              {item.jobs.map(row)}
            </JobGroup>
          ) : (
            row(item.jobs[0])
          )
        )}
      </div>
      <div className="trainorch-pager">
        <Button
          minimal
          small
          data-action="prev-page"
          disabled={q.page <= 0}
          onClick={() => list.setQuery({ page: q.page - 1 })}
          title="Previous page"
        >
          ‹
        </Button>
        <span className="trainorch-pager-text">
          {first}–{last} of {list.total}
        </span>
        <Button
          minimal
          small
          data-action="next-page"
          disabled={q.page + 1 >= list.pageCount}
          onClick={() => list.setQuery({ page: q.page + 1 })}
          title="Next page"
        >
          ›
        </Button>
      </div>
    </div>
  );
}

/**
 * Jobs of one sweep group together, at the place of the group's first job in the
 * current sort; the other jobs stay where they are.
 */
function groupJobs(jobs: readonly IJobRow[]): { group: string; jobs: IJobRow[] }[] {
  const items: { group: string; jobs: IJobRow[] }[] = [];
  const byGroup = new Map<string, IJobRow[]>();
  for (const job of jobs) {
    const group = isRestricted(job) ? '' : (job.group ?? '');
    if (!group) {
      items.push({ group: '', jobs: [job] });
      continue;
    }
    let members = byGroup.get(group);
    if (!members) {
      members = [];
      byGroup.set(group, members);
      items.push({ group, jobs: members });
    }
    members.push(job);
  }
  return items;
}

function JobGroup(props: {
  group: string;
  jobs: IJobRow[];
  actions: IJobActions;
  children: React.ReactNode;
}): JSX.Element {
  const { group, jobs, actions } = props;
  const [open, setOpen] = React.useState(true);
  const counts = new Map<string, number>();
  for (const job of jobs) {
    counts.set(job.state, (counts.get(job.state) ?? 0) + 1);
  }
  const readable = jobs.filter(job => may(job, 'read'));
  return (
    <div className="trainorch-group" data-group={group} role="group" aria-label={`Sweep ${group}`}>
      <div
        className="trainorch-group-header"
        role="button"
        aria-expanded={open}
        tabIndex={0}
        data-action="toggle-group"
        onClick={() => setOpen(!open)}
        onKeyDown={event => {
          if (event.key === 'Enter' && event.target === event.currentTarget) {
            setOpen(!open);
          }
        }}
      >
        <span className="trainorch-group-caret">{open ? '▾' : '▸'}</span>
        <span className="trainorch-group-name" title={`Sweep group ${group}`}>
          {sweepLabel(group, jobs)}
        </span>
        <span className="trainorch-group-states">
          {[...counts.entries()].map(([state, count]) => (
            <span key={state} className={`trainorch-state trainorch-state-${state}`}>
              {count} {state}
            </span>
          ))}
        </span>
        <Button
          minimal
          small
          className="trainorch-group-compare"
          data-action="compare-group"
          disabled={readable.length < 2}
          title="Compare every job of this group"
          onClick={event => {
            event.stopPropagation();
            actions.compare(readable.map(j => j.id));
          }}
        >
          compare group
        </Button>
      </div>
      {open && props.children}
    </div>
  );
}

const JobRow = React.memo(function JobRow(props: {
  job: IJobRow;
  selected: boolean;
  checked: boolean;
  model: TrainorchModel;
  actions: IJobActions;
}): JSX.Element {
  const { job, selected, model, actions } = props;
  const now = (): number => model.changes.serverNow();
  const select = (): void => model.select(selected ? null : job.id);
  const restricted = isRestricted(job);
  return (
    <div
      className={`trainorch-job${selected ? ' trainorch-mod-selected' : ''}${
        restricted ? ' trainorch-mod-restricted' : ''
      }`}
      data-job-id={job.id}
      data-state={job.state}
      data-restricted={restricted ? 'true' : undefined}
      role="listitem"
      aria-current={selected ? 'true' : undefined}
      tabIndex={0}
      onClick={select}
      onDoubleClick={() => actions.open(job.id)}
      onKeyDown={event => {
        if (event.key === 'Enter' && event.target === event.currentTarget) {
          actions.open(job.id);
        }
      }}
    >
      <div className="trainorch-job-line">
        {restricted ? (
          <span className="trainorch-check-placeholder" />
        ) : (
          <input
            type="checkbox"
            className="trainorch-check"
            data-action="select"
            aria-label={`Select ${job.name} for comparison`}
            title="Select for comparison"
            checked={props.checked}
            onClick={stopPropagation}
            onChange={event => model.list.setChecked(job.id, event.target.checked)}
          />
        )}
        <StateChip state={job.state} />
        <span className="trainorch-job-name" title={`${job.name} (${job.id})`}>
          {job.name}
        </span>
        <JobActions job={job} actions={actions} compact open />
      </div>
      {!restricted && (
        <EverySecond active={job.state === 'running'}>
          {() => <ProgressBar job={job} now={now()} />}
        </EverySecond>
      )}
      <JobMeta job={job} now={now} actions={actions} />
    </div>
  );
});

/** Who, where in the queue, GPUs, attempts, time and priority; less for another user's job. */
function JobMeta(props: { job: IJobRow; now: () => number; actions: IJobActions }): JSX.Element {
  const { job, now, actions } = props;
  return (
    <div className="trainorch-job-meta">
      <span className="trainorch-user" title="User">
        {job.user}
      </span>
      <QueuePosition job={job} />
      {isRestricted(job) ? <AskedGpus job={job} /> : <RunFacts job={job} now={now} />}
      <Priority job={job} actions={actions} />
    </div>
  );
}

/** Another user's job: how many GPUs it asks for. */
function AskedGpus(props: { job: IQueueRow }): JSX.Element | null {
  const gpus = props.job.resources?.gpus ?? 0;
  return gpus > 0 ? (
    <span className="trainorch-gpus" title="GPUs the job asks for">
      {gpus} GPU
    </span>
  ) : null;
}

/** The user's own job: GPUs held, attempt, and how long it has run or waited. */
function RunFacts(props: { job: IJob; now: () => number }): JSX.Element {
  const { job, now } = props;
  const gpus = gpusHeld(job);
  return (
    <>
      {gpus && (
        <span className="trainorch-gpus" title="GPUs held by the running attempt">
          GPU {gpus}
        </span>
      )}
      <span
        className="trainorch-attempt-label"
        title="Attempt, out of the attempts its retries allow"
      >
        try <span className="trainorch-attempts">{attemptsText(job)}</span>
      </span>
      <span
        className="trainorch-elapsed"
        title={job.started ? 'Run time' : job.terminal ? 'Ended without running' : 'Waiting'}
      >
        <EverySecond active={!job.terminal}>
          {() => formatDuration(elapsedSeconds(job, now()))}
        </EverySecond>
      </span>
    </>
  );
}
