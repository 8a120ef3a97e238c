/**
 * The compare tab: a table of the compared jobs (one row each) with their params and final
 * metrics, the best value of each metric marked and every column sortable, and a chart per
 * metric the jobs share. Presentational: data comes from CompareModel.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Button, ReactWidget, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { valueText } from './format';
import { ChartList, colour } from './lineChart';
import {
  finalMetrics,
  isSystemMetric,
  lastAttemptPoints,
  lowerIsBetter,
  metricKeys
} from './metrics';
import { CompareModel } from './comparemodel';
import { IJob } from './types';

export const COMPARE_ID = 'trainorch-compare';

interface IColumn {
  /** `name`, `param:lr`, `metric:loss`: the `data-column` of its cells. */
  key: string;
  label: string;
  value: (job: IJob) => unknown;
  /** Metric columns only: which end of the values is the best. */
  best?: 'min' | 'max';
}

interface IRow {
  job: IJob;
  /** Place in the compared list: the job's colour in the table and the charts. */
  index: number;
  values: unknown[];
}

interface ISort {
  column: string;
  descending: boolean;
}

function columnsOf(jobs: readonly IJob[], finals: Record<string, unknown>[]): IColumn[] {
  const columns: IColumn[] = [
    { key: 'name', label: 'name', value: job => job.name },
    { key: 'state', label: 'state', value: job => job.state },
    { key: 'code_hash', label: 'code hash', value: job => (job.code_hash ?? '').slice(0, 12) },
    {
      key: 'template_hash',
      label: 'template hash',
      value: job => (job.template?.hash ?? '').slice(0, 12)
    }
  ];
  const paramKeys = [...new Set(jobs.flatMap(j => Object.keys(j.params ?? {})))].sort();
  for (const key of paramKeys) {
    columns.push({ key: `param:${key}`, label: key, value: job => (job.params ?? {})[key] });
  }
  const byId = new Map(jobs.map((job, i) => [job.id, finals[i]]));
  const metrics = [...new Set(finals.flatMap(m => Object.keys(m)))]
    .filter(key => !isSystemMetric(key))
    .sort();
  for (const key of metrics) {
    columns.push({
      key: `metric:${key}`,
      label: key,
      value: job => byId.get(job.id)?.[key],
      best: lowerIsBetter(key) ? 'min' : 'max'
    });
  }
  return columns;
}

function isEmpty(value: unknown): boolean {
  return value === undefined || value === null || value === '';
}

/** Numbers numerically, anything else as text with its digits as numbers. */
function compareValues(a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') {
    return a - b;
  }
  return valueText(a).localeCompare(valueText(b), undefined, { numeric: true });
}

function sortRows(rows: IRow[], column: number, descending: boolean): IRow[] {
  return [...rows].sort((a, b) => {
    const [x, y] = [a.values[column], b.values[column]];
    // Jobs without the value stay last whichever the direction.
    if (isEmpty(x) || isEmpty(y)) {
      return Number(isEmpty(x)) - Number(isEmpty(y));
    }
    const order = compareValues(x, y);
    return descending ? -order : order;
  });
}

/** The best value of a metric column, or null when no job has a number there. */
function bestValue(rows: readonly IRow[], column: number, best: 'min' | 'max'): number | null {
  const numbers = rows
    .map(row => row.values[column])
    .filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (!numbers.length) {
    return null;
  }
  return best === 'min' ? Math.min(...numbers) : Math.max(...numbers);
}

function HeaderCell(props: {
  column: IColumn;
  sort: ISort | null;
  differ: boolean;
  onSort: () => void;
}): JSX.Element {
  const { column, sort, differ, onSort } = props;
  const sorted = sort?.column === column.key ? sort : null;
  const rule =
    column.best === 'min'
      ? 'the lowest value is the best'
      : column.best === 'max'
        ? 'the highest value is the best'
        : '';
  return (
    <th
      data-column={column.key}
      className={differ ? 'trainorch-mod-differ' : undefined}
      aria-sort={sorted ? (sorted.descending ? 'descending' : 'ascending') : 'none'}
    >
      <button
        className="trainorch-sort"
        data-action="sort"
        title={`Sort by ${column.label}${rule ? `; ${rule} (★)` : ''}`}
        onClick={onSort}
      >
        {column.label}
        {column.best && <span className="trainorch-best-rule"> {column.best} best</span>}
        <span className="trainorch-sort-mark">
          {sorted ? (sorted.descending ? ' ▼' : ' ▲') : ''}
        </span>
      </button>
    </th>
  );
}

function CompareTable(props: {
  jobs: readonly IJob[];
  finals: Record<string, unknown>[];
}): JSX.Element {
  const { jobs, finals } = props;
  const [sort, setSort] = React.useState<ISort | null>(null);
  const columns = columnsOf(jobs, finals);
  const unsorted: IRow[] = jobs.map((job, index) => ({
    job,
    index,
    values: columns.map(column => column.value(job))
  }));
  const sortColumn = columns.findIndex(column => column.key === sort?.column);
  const rows = sort && sortColumn >= 0 ? sortRows(unsorted, sortColumn, sort.descending) : unsorted;
  const best = columns.map((column, i) => (column.best ? bestValue(rows, i, column.best) : null));
  const differ = columns.map(
    (column, i) => !column.best && new Set(rows.map(row => valueText(row.values[i]))).size > 1
  );
  return (
    <table className="trainorch-compare-table">
      <thead>
        <tr>
          <th>job</th>
          {columns.map((column, i) => (
            <HeaderCell
              key={column.key}
              column={column}
              sort={sort}
              differ={differ[i]}
              onSort={() =>
                setSort({
                  column: column.key,
                  descending: sort?.column === column.key && !sort.descending
                })
              }
            />
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map(row => (
          <tr key={row.job.id} data-job-id={row.job.id}>
            <th>
              <span className="trainorch-swatch" style={{ background: colour(row.index) }} />
              {row.job.id}
            </th>
            {row.values.map((value, i) => {
              const isBest = best[i] !== null && value === best[i];
              const text = valueText(value);
              const classes = [
                differ[i] ? 'trainorch-mod-differ' : '',
                isBest ? 'trainorch-mod-best' : ''
              ].filter(Boolean);
              return (
                <td
                  key={columns[i].key}
                  data-column={columns[i].key}
                  data-best={isBest ? 'true' : undefined}
                  className={classes.join(' ') || undefined}
                  title={isBest ? `${text}: the best ${columns[i].label}` : text}
                >
                  {isBest && '★ '}
                  {text}
                </td>
              );
            })}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CompareView(props: { model: CompareModel }): JSX.Element {
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
  const perJob = jobs.map(j => metricKeys([histories[j.id]]).filter(k => !isSystemMetric(k)));
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
      {jobs.length > 0 && <CompareTable jobs={jobs} finals={jobs.map(finalMetrics)} />}
      <ChartList
        metrics={common}
        seriesAttr="data-job-id"
        seriesOf={key =>
          jobs.map((j, i) => ({
            id: j.id,
            label: `${j.name} (${j.id})`,
            points: lastAttemptPoints(histories[j.id], key),
            colour: colour(i)
          }))
        }
      />
    </div>
  );
}

export class CompareWidget extends ReactWidget {
  constructor(private readonly _model: CompareModel) {
    super();
    this.addClass('trainorch-compare-widget');
  }

  protected render(): JSX.Element {
    return <CompareView model={this._model} />;
  }
}

/** The main-area tab; its id lets the plugin find and reuse it. */
export function createCompareTab(model: CompareModel): MainAreaWidget<CompareWidget> {
  const widget = new MainAreaWidget({ content: new CompareWidget(model) });
  widget.id = COMPARE_ID;
  widget.title.label = 'Compare jobs';
  widget.title.closable = true;
  return widget;
}
