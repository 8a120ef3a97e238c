/**
 * Metric charts (drawn as inline SVG, so no chart library rides along) and the
 * comparison view. Presentational: data comes from JobsModel.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Button, ReactWidget, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { CheckboxOption } from './controls';
import { mlflowMetrics } from './format';
import { JobsModel } from './model';
import { IJob, IMetricHistory, MetricPoint } from './types';

/** Theme colours, so the lines follow light and dark themes. */
const COLOURS = [
  'var(--jp-brand-color1)',
  'var(--jp-warn-color1)',
  'var(--jp-success-color1)',
  'var(--jp-error-color1)',
  'var(--jp-info-color1)',
  'var(--jp-brand-color3)',
  'var(--jp-warn-color3)',
  'var(--jp-success-color3)'
];

export function colour(index: number): string {
  return COLOURS[index % COLOURS.length];
}

export function formatNumber(value: number): string {
  if (Number.isInteger(value)) {
    return String(value);
  }
  return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e6
    ? value.toPrecision(5)
    : value.toExponential(3);
}

export interface ISeries {
  /** Written to `data-attempt` or `data-job-id` of the polyline. */
  id: string;
  label: string;
  points: readonly MetricPoint[];
  colour: string;
}

const W = 260;
const H = 90;
const PAD = 4;

/** One metric: one polyline per series, the axis ranges and the latest value. */
export function LineChart(props: {
  metric: string;
  series: ISeries[];
  seriesAttr: 'data-attempt' | 'data-job-id';
}): JSX.Element {
  const { metric, series } = props;
  let xMin = Infinity;
  let xMax = -Infinity;
  let yMin = Infinity;
  let yMax = -Infinity;
  for (const s of series) {
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        continue;
      }
      xMin = Math.min(xMin, x);
      xMax = Math.max(xMax, x);
      yMin = Math.min(yMin, y);
      yMax = Math.max(yMax, y);
    }
  }
  const empty = xMin === Infinity;
  // A flat or single-point series still needs a non-zero span to be drawn.
  const xSpan = xMax - xMin || 1;
  const ySpan = yMax - yMin || Math.abs(yMax) || 1;
  const sx = (x: number): number => PAD + ((x - xMin) / xSpan) * (W - 2 * PAD);
  const sy = (y: number): number => H - PAD - ((y - yMin) / ySpan) * (H - 2 * PAD);
  const latest = series.length ? series[series.length - 1].points : [];
  const last = latest.length ? latest[latest.length - 1] : null;
  return (
    <div className="trainorch-chart" data-metric={metric}>
      <div className="trainorch-chart-head">
        <span className="trainorch-chart-title" title={metric}>
          {metric}
        </span>
        {last && (
          <span className="trainorch-chart-latest" title={`step ${last[0]}`}>
            {formatNumber(last[1])}
          </span>
        )}
      </div>
      <div className="trainorch-chart-body">
        <div className="trainorch-chart-y">
          <span>{empty ? '' : formatNumber(yMax)}</span>
          <span>{empty ? '' : formatNumber(yMin)}</span>
        </div>
        <svg
          className="trainorch-chart-svg"
          viewBox={`0 0 ${W} ${H}`}
          preserveAspectRatio="none"
          role="img"
          aria-label={`${metric} by step`}
        >
          <rect className="trainorch-chart-frame" x={0} y={0} width={W} height={H} />
          {series.map(s => {
            const pts = s.points
              .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
              .map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
            if (pts.length === 1) {
              // A lone point would be an invisible polyline.
              pts.push(pts[0]);
            }
            return (
              <polyline
                key={s.id}
                {...{ [props.seriesAttr]: s.id }}
                points={pts.join(' ')}
                fill="none"
                stroke={s.colour}
                strokeWidth={1.5}
                strokeLinecap="round"
                vectorEffect="non-scaling-stroke"
              >
                <title>{s.label}</title>
              </polyline>
            );
          })}
        </svg>
      </div>
      <div className="trainorch-chart-x">
        <span>{empty ? '' : `step ${xMin}`}</span>
        <span>{empty ? '' : String(xMax)}</span>
      </div>
    </div>
  );
}

function isSystem(key: string): boolean {
  return key.startsWith('system/');
}

/** The metric keys of histories, non-system first, each group sorted. */
export function metricKeys(histories: (IMetricHistory | undefined)[]): string[] {
  const keys = new Set<string>();
  for (const h of histories) {
    for (const a of h?.attempts ?? []) {
      for (const key of Object.keys(a.metrics ?? {})) {
        keys.add(key);
      }
    }
  }
  const all = [...keys].sort();
  return [...all.filter(k => !isSystem(k)), ...all.filter(isSystem)];
}

/** The detail's metric slot: a chart per key, one line per attempt. */
export function MetricCharts(props: {
  job: IJob;
  history: IMetricHistory | null;
  /** Only this attempt, or every one. */
  attempt: number | null;
}): JSX.Element {
  const { job, history, attempt } = props;
  const [system, setSystem] = React.useState(false);
  const attempts = (history?.attempts ?? []).filter(a => attempt === null || a.n === attempt);
  const keys = metricKeys([history ?? undefined]);
  const hasSystem = keys.some(isSystem);
  const shown = keys.filter(k => system || !isSystem(k));
  // Values never charted (text, or no step) still deserve a line.
  const latest = Object.entries(job.progress?.metrics ?? {}).filter(
    ([key, value]) => !keys.includes(key) || typeof value !== 'number'
  );
  return (
    <section className="trainorch-metrics" data-slot="metrics" aria-label="Metrics">
      <div className="trainorch-section-title">
        Metrics
        {attempt !== null && <span className="trainorch-muted"> #{attempt}</span>}
        {hasSystem && (
          <CheckboxOption
            className="trainorch-system-toggle"
            action="system-metrics"
            label="system"
            title="Show system metrics (system/*)"
            checked={system}
            onChange={setSystem}
          />
        )}
      </div>
      {history?.warning && (
        <div className="trainorch-notice trainorch-metrics-warning" title={history.warning}>
          {history.warning}
        </div>
      )}
      {shown.length === 0 && latest.length === 0 && (
        <div className="trainorch-muted">No metrics reported.</div>
      )}
      <div className="trainorch-charts">
        {shown.map(key => (
          <LineChart
            key={key}
            metric={key}
            seriesAttr="data-attempt"
            series={attempts
              .filter(a => a.metrics?.[key]?.length)
              .map(a => ({
                id: String(a.n),
                label: `attempt ${a.n}`,
                points: a.metrics[key],
                colour: colour(a.n - 1)
              }))}
          />
        ))}
      </div>
      {latest.length > 0 && (
        <dl className="trainorch-summary">
          {latest.map(([key, value]) => (
            <React.Fragment key={key}>
              <dt>{key}</dt>
              <dd>{typeof value === 'number' ? formatNumber(value) : JSON.stringify(value)}</dd>
            </React.Fragment>
          ))}
        </dl>
      )}
    </section>
  );
}

// -- comparison ---------------------------------------------------------------------------

export const COMPARE_ID = 'trainorch-compare';

function text(value: unknown): string {
  if (value === undefined) {
    return '';
  }
  if (typeof value === 'number') {
    return formatNumber(value);
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Final metric values: MLflow's when known, else the last progress report. */
function finalMetrics(job: IJob): Record<string, unknown> {
  const mlflow = mlflowMetrics(job);
  return Object.keys(mlflow).length ? mlflow : (job.progress?.metrics ?? {});
}

/** The points of a job's last attempt that has this metric. */
function lastAttemptPoints(history: IMetricHistory | undefined, key: string): MetricPoint[] {
  const attempts = history?.attempts ?? [];
  for (let i = attempts.length - 1; i >= 0; i--) {
    const points = attempts[i].metrics?.[key];
    if (points?.length) {
      return points;
    }
  }
  return [];
}

function CompareView(props: { model: JobsModel }): JSX.Element {
  const { model } = props;
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    const slot = (): void => setCount(c => c + 1);
    model.compareChanged.connect(slot);
    return () => {
      model.compareChanged.disconnect(slot);
    };
  }, [model]);
  const jobs = model.compareJobs;
  const histories = model.compareMetrics;
  const rows: { label: string; key: string; values: string[] }[] = [
    { label: 'name', key: 'name', values: jobs.map(j => j.name) },
    { label: 'state', key: 'state', values: jobs.map(j => j.state) },
    {
      label: 'code hash',
      key: 'code_hash',
      values: jobs.map(j => (j.code_hash ?? '').slice(0, 12))
    },
    {
      label: 'template hash',
      key: 'template_hash',
      values: jobs.map(j => (j.template?.hash ?? '').slice(0, 12))
    }
  ];
  const paramKeys = [...new Set(jobs.flatMap(j => Object.keys(j.params ?? {})))].sort();
  for (const key of paramKeys) {
    rows.push({
      label: key,
      key: `param:${key}`,
      values: jobs.map(j => text((j.params ?? {})[key]))
    });
  }
  const finals = jobs.map(finalMetrics);
  const metricKeysFinal = [...new Set(finals.flatMap(m => Object.keys(m)))]
    .filter(k => !isSystem(k))
    .sort();
  for (const key of metricKeysFinal) {
    rows.push({ label: key, key: `metric:${key}`, values: finals.map(m => text(m[key])) });
  }
  const perJob = jobs.map(j => metricKeys([histories[j.id]]).filter(k => !isSystem(k)));
  const common = perJob.length ? perJob[0].filter(k => perJob.every(keys => keys.includes(k))) : [];
  return (
    <div className="trainorch-compare">
      <div className="trainorch-compare-head">
        <span className="trainorch-title">Compare {jobs.length} jobs</span>
        {model.compareLoading && <span className="trainorch-muted">loading…</span>}
        <Button
          minimal
          small
          className="trainorch-icon-button"
          data-action="compare-refresh"
          title="Read the jobs and their metrics again"
          onClick={() => void model.loadCompare()}
        >
          <refreshIcon.react tag="span" />
        </Button>
      </div>
      {model.compareError && <div className="trainorch-error">{model.compareError}</div>}
      {jobs.length > 0 && (
        <table className="trainorch-compare-table">
          <thead>
            <tr>
              <th />
              {jobs.map((j, i) => (
                <th key={j.id} data-job-id={j.id}>
                  <span className="trainorch-swatch" style={{ background: colour(i) }} />
                  {j.id}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {rows.map(row => {
              const differ = new Set(row.values).size > 1;
              return (
                <tr
                  key={row.key}
                  data-row={row.key}
                  className={differ ? 'trainorch-mod-differ' : undefined}
                >
                  <th title={row.key}>{row.label}</th>
                  {row.values.map((value, i) => (
                    <td key={jobs[i].id} title={value}>
                      {value}
                    </td>
                  ))}
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {common.length > 0 && (
        <>
          <div className="trainorch-legend">
            {jobs.map((j, i) => (
              <span key={j.id} className="trainorch-legend-item" data-job-id={j.id}>
                <span className="trainorch-swatch" style={{ background: colour(i) }} />
                {j.name} ({j.id})
              </span>
            ))}
          </div>
          <div className="trainorch-charts">
            {common.map(key => (
              <LineChart
                key={key}
                metric={key}
                seriesAttr="data-job-id"
                series={jobs.map((j, i) => ({
                  id: j.id,
                  label: `${j.name} (${j.id})`,
                  points: lastAttemptPoints(histories[j.id], key),
                  colour: colour(i)
                }))}
              />
            ))}
          </div>
        </>
      )}
    </div>
  );
}

export class CompareWidget extends ReactWidget {
  constructor(private readonly _model: JobsModel) {
    super();
    this.addClass('trainorch-compare-widget');
  }

  protected render(): JSX.Element {
    return <CompareView model={this._model} />;
  }
}

/** The main-area tab; its id lets the plugin find and reuse it. */
export function createCompareTab(model: JobsModel): MainAreaWidget<CompareWidget> {
  const widget = new MainAreaWidget({ content: new CompareWidget(model) });
  widget.id = COMPARE_ID;
  widget.title.label = 'Compare jobs';
  widget.title.closable = true;
  return widget;
}
