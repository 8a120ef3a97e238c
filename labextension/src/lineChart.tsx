/**
 * One metric as a uPlot line chart: the values at the cursor in its legend, drag to zoom and
 * double-click to reset (uPlot's own), a log-scale toggle, the JupyterLab theme's colours,
 * and the width of its container.
 */
import * as React from 'react';
import uPlot from 'uplot';

import { CheckboxOption } from './controls';
import { formatNumber } from './format';
import { MetricPoint } from './types';

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

/** A series' colour as CSS (a `var(--jp-…)`), for swatches and lines alike. */
export function colour(index: number): string {
  return COLOURS[index % COLOURS.length];
}

export interface ISeries {
  /** Written to `data-attempt` or `data-job-id` of the series' legend row. */
  id: string;
  label: string;
  points: readonly MetricPoint[];
  colour: string;
}

const HEIGHT = 200;
const Y_AXIS_WIDTH = 64;

/** A `var(--name)` as the theme's value now: a canvas cannot read CSS variables. */
function themeValue(css: string): string {
  const match = /^var\((--[\w-]+)\)$/.exec(css);
  if (!match) {
    return css;
  }
  return getComputedStyle(document.body).getPropertyValue(match[1]).trim() || css;
}

/**
 * The JupyterLab theme's name. JupyterLab sets `data-jp-theme-name` once the new theme's
 * CSS has loaded, so colours read after a change are the new theme's.
 */
function useThemeName(): string {
  const read = (): string => document.body.dataset.jpThemeName ?? '';
  const [name, setName] = React.useState(read);
  React.useEffect(() => {
    const observer = new MutationObserver(() => setName(read()));
    observer.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-name'] });
    return () => observer.disconnect();
  }, []);
  return name;
}

function isPoint(point: MetricPoint): boolean {
  return Number.isFinite(point[0]) && Number.isFinite(point[1]);
}

/** A series' points by ascending step; a step reported twice keeps its last value. */
function table(points: readonly MetricPoint[]): uPlot.AlignedData {
  const byStep = new Map<number, number>();
  for (const point of points) {
    if (isPoint(point)) {
      byStep.set(point[0], point[1]);
    }
  }
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  return [steps, steps.map(step => byStep.get(step) as number)];
}

/** Every series on one shared step axis, as uPlot draws them. */
function alignedData(series: readonly ISeries[]): uPlot.AlignedData {
  const tables = series.map(s => table(s.points));
  return tables.length === 1 ? tables[0] : uPlot.join(tables);
}

/**
 * The aligned data, computed again only when a series' points are another array: the views
 * render on every change of the job list, the metric histories change far less often.
 */
function useAlignedData(series: readonly ISeries[]): uPlot.AlignedData {
  const cache = React.useRef<{ points: (readonly MetricPoint[])[]; data: uPlot.AlignedData }>();
  const points = series.map(s => s.points);
  const cached = cache.current;
  if (
    !cached ||
    cached.points.length !== points.length ||
    cached.points.some((p, i) => p !== points[i])
  ) {
    cache.current = { points, data: alignedData(series) };
  }
  return cache.current!.data;
}

function lastValue(values: ArrayLike<number | null | undefined>): number | null {
  for (let i = values.length - 1; i >= 0; i--) {
    const value = values[i];
    if (value !== null && value !== undefined) {
      return value;
    }
  }
  return null;
}

function numberText(value: number | null): string {
  return value === null || value === undefined ? '–' : formatNumber(value);
}

function options(
  series: readonly ISeries[],
  log: boolean,
  width: number,
  height: number,
  element: HTMLElement,
  sync: string | undefined
): uPlot.Options {
  const style = getComputedStyle(element);
  const grid = themeValue('var(--jp-border-color2)');
  const axis: uPlot.Axis = {
    stroke: themeValue('var(--jp-ui-font-color2)'),
    font: `${style.fontSize} ${style.fontFamily}`,
    grid: { stroke: grid, width: 1 },
    ticks: { stroke: grid, width: 1 },
    values: (_plot, splits) => splits.map(numberText)
  };
  return {
    width,
    height,
    scales: { x: { time: false }, y: log ? { distr: 3, log: 10 } : {} },
    axes: [axis, { ...axis, size: Y_AXIS_WIDTH }],
    // Off the plot, the legend shows each line's latest value.
    series: [
      {
        label: 'step',
        value: (_plot, step, _series, index) => (index === null ? 'latest' : numberText(step))
      },
      ...series.map(s => ({
        label: s.label,
        stroke: themeValue(s.colour),
        width: 1.5,
        // Series of other attempts or jobs leave gaps on the shared step axis.
        spanGaps: true,
        value: (plot: uPlot, value: number | null, seriesIndex: number, index: number | null) =>
          numberText(index === null ? lastValue(plot.data[seriesIndex]) : value)
      }))
    ],
    cursor: { drag: { x: true, y: false }, sync: sync ? { key: sync } : undefined },
    legend: { live: true }
  };
}

/** Whether the steps shown are fewer than the data's: the user dragged to zoom. */
function isZoomed(plot: uPlot): boolean {
  const steps = plot.data[0];
  const { min, max } = plot.scales.x;
  if (!steps.length || min === undefined || max === undefined) {
    return false;
  }
  return min > steps[0] || max < steps[steps.length - 1];
}

/** Each legend row names its series and how many points it draws (the browser tests read them). */
function markLegend(
  plot: uPlot,
  series: readonly ISeries[],
  attribute: 'data-attempt' | 'data-job-id'
): void {
  const rows = plot.root.querySelectorAll('.u-legend .u-series');
  series.forEach((s, i) => {
    const row = rows[i + 1]; // row 0 is the step
    const values: ArrayLike<number | null | undefined> = plot.data[i + 1] ?? [];
    const drawn = Array.from(values).filter(value => value !== null && value !== undefined);
    row?.setAttribute(attribute, s.id);
    row?.setAttribute('data-points', String(drawn.length));
  });
}

/** One metric: a line per series, their latest values in the legend, and a log-scale toggle. */
export function LineChart(props: {
  metric: string;
  series: ISeries[];
  seriesAttr: 'data-attempt' | 'data-job-id';
  /** Of the plot area in CSS pixels, without the legend. */
  height?: number;
  /** Charts with the same key show the cursor at the same step. */
  sync?: string;
}): JSX.Element {
  const { metric, seriesAttr } = props;
  const height = props.height ?? HEIGHT;
  const drawn = props.series.filter(s => s.points.some(isPoint));
  const positive = drawn.every(s => s.points.every(p => !isPoint(p) || p[1] > 0));
  const [logWanted, setLogWanted] = React.useState(false);
  const log = logWanted && positive;
  const theme = useThemeName();
  const data = useAlignedData(drawn);
  const target = React.useRef<HTMLDivElement>(null);
  const plot = React.useRef<uPlot | null>(null);
  // What only a new plot can change: the series' names and colours.
  const look = drawn.map(s => `${s.id}\t${s.label}\t${s.colour}`).join('\n');

  React.useEffect(() => {
    const element = target.current;
    if (!element || !look) {
      return;
    }
    const created = new uPlot(
      options(drawn, log, element.clientWidth, height, element, props.sync),
      data,
      element
    );
    markLegend(created, drawn, seriesAttr);
    plot.current = created;
    const observer = new ResizeObserver(() => {
      if (element.clientWidth !== created.width) {
        created.setSize({ width: element.clientWidth, height });
      }
    });
    observer.observe(element);
    return () => {
      observer.disconnect();
      created.destroy();
      plot.current = null;
    };
    // New data goes to the plot below, without building it again (which would lose the zoom).
  }, [look, log, theme, height, seriesAttr, props.sync]);

  React.useEffect(() => {
    const current = plot.current;
    if (current && current.data !== data) {
      // A running job's new points must not undo the user's zoom.
      current.setData(data, !isZoomed(current));
      markLegend(current, drawn, seriesAttr);
    }
  }, [data]);

  return (
    <div className="trainorch-chart" data-metric={metric} data-scale={log ? 'log' : 'linear'}>
      <div className="trainorch-chart-head">
        <span className="trainorch-chart-title" title={metric}>
          {metric}
        </span>
        <CheckboxOption
          className="trainorch-log-toggle"
          action="log-scale"
          label="log"
          title={
            positive
              ? 'Logarithmic y axis (drag to zoom, double-click to reset)'
              : 'A logarithmic axis needs every value above 0'
          }
          checked={log}
          disabled={!positive}
          onChange={setLogWanted}
        />
      </div>
      {drawn.length ? (
        <div className="trainorch-chart-plot" ref={target} />
      ) : (
        <div className="trainorch-muted">No points yet.</div>
      )}
    </div>
  );
}

/** A chart per metric, one under the other, their cursors at the same step. */
export function ChartList(props: {
  metrics: readonly string[];
  seriesAttr: 'data-attempt' | 'data-job-id';
  seriesOf: (metric: string) => ISeries[];
}): JSX.Element {
  const sync = React.useId();
  return (
    <div className="trainorch-charts">
      {props.metrics.map(metric => (
        <LineChart
          key={metric}
          metric={metric}
          seriesAttr={props.seriesAttr}
          series={props.seriesOf(metric)}
          sync={sync}
        />
      ))}
    </div>
  );
}
