/**
 * The detail tab's fields: the job's summary (or, for another user's job, what its queue
 * view tells), and its params, command, source and rendered spec.
 */
import * as React from 'react';

import {
  attemptsText,
  elapsedSeconds,
  etaSeconds,
  formatBytes,
  formatDuration,
  formatTime,
  mlflowModelText,
  mlflowWarning,
  priorityLabel
} from './format';
import { IJob, IJobRow, IJobSpec, IQueueRow } from './types';

function Field(props: { label: string; children: React.ReactNode; field?: string }): JSX.Element {
  return (
    <>
      <dt>{props.label}</dt>
      <dd data-field={props.field}>{props.children}</dd>
    </>
  );
}

/** What anyone sees of another user's job in the detail. */
export function QueueSummary(props: { job: IQueueRow; now: number }): JSX.Element {
  const { job, now } = props;
  const r = job.resources;
  return (
    <dl className="trainorch-summary">
      <OwnerFields job={job} />
      {r && <ResourcesField resources={r} />}
      <TimeFields job={job} now={now} />
    </dl>
  );
}

/** Whose job it is, and its priority: what everyone sees of any job. */
function OwnerFields(props: { job: IJobRow }): JSX.Element {
  const { job } = props;
  return (
    <>
      <Field label="User" field="user">
        {job.user}
      </Field>
      <Field label="Priority" field="priority">
        {priorityLabel(job)} ({job.priority})
      </Field>
    </>
  );
}

const WHEN_LABEL: Record<string, string> = {
  ok: 'once it succeeded',
  any: 'once it ended',
  notok: 'only if it failed'
};

const WHEN_TITLE: Record<string, string> = {
  ok: 'Runs once this job has succeeded',
  any: 'Runs once this job has ended, however it ended',
  notok: 'Runs only if this job failed or was cancelled (cancelled if it succeeds)'
};

/** Resources as one line: nodes, GPUs, CPUs, memory. */
function ResourcesField(props: { resources: IJob['resources'] }): JSX.Element {
  const r = props.resources;
  return (
    <Field label="Resources" field="resources">
      {(r.nodes ?? 1) > 1 ? `${r.nodes} nodes, each ` : ''}
      {r.gpus} GPU · {r.cpus} CPU{r.memory ? ` · ${formatBytes(r.memory)}` : ''}
    </Field>
  );
}

/** When the job was submitted, started and ended, and how long it has run or waited. */
function TimeFields(props: { job: IJobRow; now: number; eta?: number | null }): JSX.Element {
  const { job, now, eta } = props;
  return (
    <>
      <Field label="Submitted" field="created">
        {formatTime(job.created)}
      </Field>
      {job.started && (
        <Field label="Started" field="started">
          {formatTime(job.started)}
        </Field>
      )}
      {job.ended && (
        <Field label="Ended" field="ended">
          {formatTime(job.ended)}
        </Field>
      )}
      <Field label={job.started ? 'Run time' : 'Waiting'} field="elapsed">
        {formatDuration(elapsedSeconds(job, now))}
        {eta !== undefined && eta !== null && eta > 0 ? ` · ETA ${formatDuration(eta)}` : ''}
      </Field>
    </>
  );
}

export function Summary(props: {
  job: IJob;
  now: number;
  /** Open another job (a dependency, the job this one reran). */
  open: (id: string) => void;
  /** The link to a job's MLflow run (TrainorchClient.mlflowRunUrl). */
  mlflowRunUrl: (mlflow: IJob['mlflow']) => string | null;
}): JSX.Element {
  const { job, now, open, mlflowRunUrl } = props;
  const r = job.resources;
  const template = job.template?.name
    ? `${job.template.name}${job.template.version ? ` v${job.template.version}` : ''}`
    : '';
  const eta = etaSeconds(job, now);
  const runUrl = mlflowRunUrl(job.mlflow) ?? job.mlflow?.url ?? null;
  const warning = mlflowWarning(job);
  const registered = mlflowModelText(job);
  return (
    <dl className="trainorch-summary">
      <OwnerFields job={job} />
      <Field label="Kind" field="kind">
        {job.kind}
        {template && ` · ${template}`}
        {job.template?.hash && (
          <span className="trainorch-muted"> {job.template.hash.slice(0, 10)}</span>
        )}
      </Field>
      <ResourcesField resources={r} />
      <Field label="Attempts" field="attempts">
        {attemptsText(job)}
        {job.timeout ? ` · timeout ${formatDuration(job.timeout)}` : ''}
      </Field>
      <TimeFields job={job} now={now} eta={eta} />
      {job.depends_on.length > 0 && (
        <Field label="Depends on" field="depends_on">
          {job.depends_on.map(dep => {
            const when = job.dependencies?.find(d => d.job_id === dep)?.when ?? 'ok';
            return (
              <span key={dep} className="trainorch-dep-item" data-when={when}>
                <button
                  className="trainorch-link trainorch-dep"
                  data-action="open-dependency"
                  data-job-id-ref={dep}
                  title={WHEN_TITLE[when]}
                  onClick={() => open(dep)}
                >
                  {dep}
                </button>
                {when !== 'ok' && <span className="trainorch-dep-when"> ({WHEN_LABEL[when]})</span>}
              </span>
            );
          })}
        </Field>
      )}
      <Field label="MLflow" field="mlflow">
        {runUrl ? (
          <a
            className="trainorch-link trainorch-mlflow"
            href={runUrl}
            target="_blank"
            rel="noopener noreferrer"
            title={`MLflow run ${job.mlflow.run_id ?? ''}`}
          >
            run {(job.mlflow.run_id ?? '').slice(0, 12)}
          </a>
        ) : job.mlflow?.run_id ? (
          <span className="trainorch-mlflow" title={job.mlflow.run_id}>
            run {job.mlflow.run_id.slice(0, 12)}
          </span>
        ) : (
          <span className="trainorch-muted">not tracked</span>
        )}
        {warning && (
          <div className="trainorch-notice" data-field="mlflow-warning" title={warning}>
            {warning}
          </div>
        )}
      </Field>
      {registered && (
        <Field label="Model" field="model">
          {registered}
        </Field>
      )}
      {job.rerun_of && (
        <Field label="Rerun of" field="rerun_of">
          <button
            className="trainorch-link trainorch-dep"
            data-action="open-rerun-of"
            onClick={() => job.rerun_of && open(job.rerun_of)}
          >
            {job.rerun_of}
          </button>
        </Field>
      )}
      {job.group && (
        <Field label="Group" field="group">
          {job.group}
        </Field>
      )}
      {job.outputs.length > 0 && (
        <Field label="Outputs" field="outputs">
          {job.outputs.join(', ')}
          {job.has_outputs ? ' (ready)' : ''}
        </Field>
      )}
    </dl>
  );
}

export function Spec(props: { job: IJob }): JSX.Element {
  const spec = props.job.spec;
  const params = Object.entries(spec?.params ?? props.job.params ?? {});
  const { source, command, ...rest }: Partial<IJobSpec> = spec ?? {};
  return (
    <section className="trainorch-spec-section">
      <div className="trainorch-section-title">Params</div>
      {params.length === 0 ? (
        <div className="trainorch-muted">No params.</div>
      ) : (
        <dl className="trainorch-summary trainorch-params">
          {params.map(([key, value]) => (
            <Field key={key} label={key}>
              {typeof value === 'string' ? value : JSON.stringify(value)}
            </Field>
          ))}
        </dl>
      )}
      {command && (
        <details className="trainorch-details" open>
          <summary>Command</summary>
          <pre className="trainorch-code">{command}</pre>
        </details>
      )}
      {source && (
        <details className="trainorch-details">
          <summary>Source</summary>
          <pre className="trainorch-code">{source}</pre>
        </details>
      )}
      {spec && (
        <details className="trainorch-details trainorch-spec">
          <summary>Rendered spec</summary>
          <pre className="trainorch-code">{JSON.stringify(rest, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}
