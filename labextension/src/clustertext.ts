/**
 * Pure helpers for the cluster strip: the queue by priority, the pool's bounds, the workers'
 * utilisation and the autoscaling events as text. No DOM and no requests here.
 */
import { formatBytes, formatTime, toSeconds } from './format';
import { ICluster, IWorker, PRIORITY_CLASSES } from './types';

type ScalingEvent = NonNullable<ICluster['autoscaling']>['events'][number];
type GpuUsage = NonNullable<IWorker['usage']>['gpus'][number];

/** `3 urgent · 5 normal`: the waiting jobs by priority class, the highest first. */
export function queueByPriorityText(cluster: ICluster): string {
  const counts = cluster.queue_by_priority;
  const known: readonly string[] = PRIORITY_CLASSES;
  const order = [
    ...[...PRIORITY_CLASSES].reverse(),
    ...Object.keys(counts)
      .filter(name => !known.includes(name))
      .sort()
  ];
  return order
    .filter(name => (counts[name] ?? 0) > 0)
    .map(name => `${counts[name]} ${name}`)
    .join(' · ');
}

/** `autoscaling 1–4`, or empty when the pool has a fixed size. */
export function autoscalingText(cluster: ICluster): string {
  const scaling = cluster.autoscaling;
  return scaling ? `autoscaling ${scaling.minimum}–${scaling.maximum}` : '';
}

/** The number of workers asked for, when it is not the number there is. */
export function pendingTarget(cluster: ICluster): number | null {
  const target = cluster.autoscaling?.target;
  return typeof target === 'number' && target !== cluster.workers.length ? target : null;
}

/** `12`, `1.5`, `0.2`: GPU-minutes, to a tenth below ten. */
export function minutesText(minutes: number): string {
  return minutes >= 10 ? String(Math.round(minutes)) : String(Math.round(minutes * 10) / 10);
}

export const IDLE_GPU_TITLE =
  'GPU time left idle while jobs that wanted GPUs waited, since the service started ' +
  '(a job waiting for a whole worker that a smaller job still holds, say). ' +
  'A good schedule keeps this at 0.';

/** `just now`, `45s ago`, `3m ago`, `2h ago`, `4d ago`. */
export function relativeTime(value: string | null | undefined, now: number): string {
  const s = toSeconds(value);
  if (s === null) {
    return '';
  }
  const ago = Math.max(0, Math.round(now - s));
  if (ago < 5) {
    return 'just now';
  }
  if (ago < 60) {
    return `${ago}s ago`;
  }
  if (ago < 3600) {
    return `${Math.floor(ago / 60)}m ago`;
  }
  if (ago < 86400) {
    return `${Math.floor(ago / 3600)}h ago`;
  }
  return `${Math.floor(ago / 86400)}d ago`;
}

/** The latest autoscaling decisions, newest first. */
export function recentEvents(cluster: ICluster, count: number): ScalingEvent[] {
  const events = cluster.autoscaling?.events ?? [];
  return events.slice(-count).reverse();
}

/** `CPU 35% · memory 12 GiB used`, or empty before the worker's host was read. */
export function hostUsageText(worker: IWorker): string {
  const usage = worker.usage;
  if (!usage) {
    return '';
  }
  return `CPU ${Math.round(usage.cpu)}% · memory ${formatBytes(usage.memory_used)} used`;
}

/** `GPU 0: 80% · 10 GiB/16 GiB`. */
export function gpuUsageText(gpu: GpuUsage): string {
  const memory = gpu.memory_total
    ? ` · ${formatBytes(gpu.memory_used)}/${formatBytes(gpu.memory_total)}`
    : '';
  return `GPU ${gpu.id}: ${Math.round(gpu.utilisation)}%${memory}`;
}

/** `1/2 GPUs free, 3/4 CPUs free, 1 running`: what the scheduler holds of a worker. */
export function workerHoldingsText(worker: IWorker): string {
  const gpus = worker.gpus.length
    ? `GPUs free ${worker.free_gpus.length}/${worker.gpus.length}, `
    : '';
  return `${gpus}CPUs free ${worker.free_cpus}/${worker.cpus}, ${worker.running.length} running`;
}

/** The strip's tooltip: the cluster, then each worker with its utilisation. */
export function clusterTitle(cluster: ICluster): string {
  const lines = [`${cluster.kind ?? 'cluster'} ${cluster.address ?? ''}`.trim()];
  for (const w of cluster.workers) {
    lines.push(`${w.name || w.address}: ${workerHoldingsText(w)}`);
    const host = hostUsageText(w);
    if (host) {
      lines.push(`  ${host}`);
    }
    for (const gpu of w.usage?.gpus ?? []) {
      lines.push(`  ${gpuUsageText(gpu)}`);
    }
  }
  const scaling = cluster.autoscaling;
  if (scaling) {
    lines.push(
      `Autoscaling ${scaling.minimum}–${scaling.maximum} workers (now asking for ` +
        `${scaling.target}); idle workers go after ${scaling.grace} s`
    );
  }
  return lines.join('\n');
}

/** When a worker's utilisation was read. */
export function usageTitle(worker: IWorker): string {
  const time = formatTime(worker.usage?.time);
  return time ? `Read at ${time} (every few seconds)` : 'Not read yet';
}
