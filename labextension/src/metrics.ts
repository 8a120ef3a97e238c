/**
 * Pure helpers over metric histories and final values, shared by the job's charts and the
 * compare view. No DOM here.
 */
import { mlflowMetrics } from './format';
import { IJob, IMetricHistory, MetricPoint } from './types';

export function isSystemMetric(key: string): boolean {
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
  return [...all.filter(k => !isSystemMetric(k)), ...all.filter(isSystemMetric)];
}

/** The points of a job's last attempt that has this metric. */
export function lastAttemptPoints(
  history: IMetricHistory | undefined,
  key: string
): readonly MetricPoint[] {
  const attempts = history?.attempts ?? [];
  for (let i = attempts.length - 1; i >= 0; i--) {
    const points = attempts[i].metrics?.[key];
    if (points?.length) {
      return points;
    }
  }
  return [];
}

/** Final metric values: MLflow's when known, else the last progress report. */
export function finalMetrics(job: IJob): Record<string, unknown> {
  const mlflow = mlflowMetrics(job);
  return Object.keys(mlflow).length ? mlflow : (job.progress?.metrics ?? {});
}

const LOWER_IS_BETTER = new Set(['loss', 'error', 'err', 'mae', 'mse', 'rmse', 'perplexity']);

/**
 * Whether the smallest value of a metric is its best: a word of its name is a loss or an
 * error (`val_loss`, `train/mse`, `valError`); otherwise the largest is.
 */
export function lowerIsBetter(metric: string): boolean {
  const words = metric
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/);
  return words.some(word => LOWER_IS_BETTER.has(word));
}
