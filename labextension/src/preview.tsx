/**
 * The sidebar's compact preview of the selected job: its name, state, why it waits,
 * progress and the last lines of its log, with an "Open" button for the full detail tab.
 */
import { Button, closeIcon } from '@jupyterlab/ui-components';
import * as React from 'react';
import { useSignal } from './controls';
import { JobDetailModel } from './detailmodel';
import {
  IJobActions,
  useDetailJob,
  JobActions,
  ProgressBar,
  QueuePosition,
  StateChip
} from './jobparts';
import { LogTail, renderLines } from './logs';
import { lineContent } from './logview';
import { TrainorchModel } from './model';
import { isRestricted } from './types';

/** Log lines the preview shows. */
const PREVIEW_LINES = 5;

/** Re-renders with the preview alone, so a busy job's progress leaves the list be. */
export function PreviewSlot(props: {
  model: TrainorchModel;
  actions: IJobActions;
}): JSX.Element | null {
  useSignal(props.model.selectionChanged);
  const preview = props.model.preview;
  return preview ? (
    <JobPreview
      key={preview.jobId}
      detail={preview}
      now={() => props.model.changes.serverNow()}
      close={() => props.model.select(null)}
      actions={props.actions}
    />
  ) : null;
}

function JobPreview(props: {
  detail: JobDetailModel;
  now: () => number;
  close: () => void;
  actions: IJobActions;
}): JSX.Element {
  const { detail, actions } = props;
  const job = useDetailJob(detail);
  const close = (
    <Button
      minimal
      small
      className="trainorch-icon-button"
      data-action="close"
      title="Close the preview"
      onClick={props.close}
    >
      <closeIcon.react tag="span" />
    </Button>
  );
  return (
    <div
      className="trainorch-preview"
      data-preview-job-id={detail.jobId}
      data-state={job?.state}
      aria-label="Selected job"
    >
      <div className="trainorch-preview-header">
        {job && <StateChip state={job.state} />}
        <span className="trainorch-preview-title" title={job ? `${job.name} (${job.id})` : ''}>
          {job?.name ?? detail.jobId}
        </span>
        {close}
      </div>
      {!job ? (
        detail.error ? (
          <div className="trainorch-error">{detail.error}</div>
        ) : (
          <div className="trainorch-empty">Loading…</div>
        )
      ) : (
        <>
          <div className="trainorch-preview-actions">
            <JobActions job={job} actions={actions} open />
          </div>
          <QueuePosition job={job} />
          {job.wait_reason && (
            <div className="trainorch-wait-reason" data-field="wait_reason">
              {job.wait_reason}
            </div>
          )}
          {!isRestricted(job) && <ProgressBar job={job} now={props.now()} />}
          {!isRestricted(job) && job.error && <div className="trainorch-error">{job.error}</div>}
          {detail.logTail && <LastLines tail={detail.logTail} />}
        </>
      )}
    </div>
  );
}

/** The newest lines of the log, with their colours. */
function LastLines(props: { tail: LogTail }): JSX.Element {
  const { tail } = props;
  useSignal(tail.changed);
  const lines = tail.lines.slice(-PREVIEW_LINES);
  const rendered = renderLines(lines);
  return (
    <div className="trainorch-preview-log" aria-label="Last log lines">
      {rendered.length === 0 && <div className="trainorch-log-empty">No output yet.</div>}
      {rendered.map(r => (
        <div
          key={r.line.id}
          className="trainorch-log-line"
          data-line-id={r.line.id}
          {...lineContent(r)}
        />
      ))}
    </div>
  );
}
