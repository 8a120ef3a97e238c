/**
 * A job's metric charts (uPlot, through LineChart). The compare tab and the chart itself
 * live in compare.tsx and lineChart.tsx; their names are exported here too, where the views
 * have always found them.
 */
import * as React from 'react';

import { CheckboxOption } from './controls';
import { valueText } from './format';
import { ChartList, colour } from './lineChart';
import { isSystemMetric, metricKeys } from './metrics';
import { IJob, IMetricHistory } from './types';

export { COMPARE_ID, CompareWidget, createCompareTab } from './compare';
export { colour, LineChart } from './lineChart';
export type { ISeries } from './lineChart';
export { metricKeys } from './metrics';

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
  const hasSystem = keys.some(isSystemMetric);
  const shown = keys.filter(k => system || !isSystemMetric(k));
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
      <ChartList
        metrics={shown}
        seriesAttr="data-attempt"
        seriesOf={key =>
          attempts
            .filter(a => a.metrics?.[key]?.length)
            .map(a => ({
              id: String(a.n),
              label: `attempt ${a.n}`,
              points: a.metrics[key],
              colour: colour(a.n - 1)
            }))
        }
      />
      {latest.length > 0 && (
        <dl className="trainorch-summary">
          {latest.map(([key, value]) => (
            <React.Fragment key={key}>
              <dt>{key}</dt>
              <dd>{valueText(value)}</dd>
            </React.Fragment>
          ))}
        </dl>
      )}
    </section>
  );
}
