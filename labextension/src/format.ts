/**
 * Pure helpers for the views: numbers, times, progress, attempts, sweep labels and the
 * `%%train` text of clone-to-cell. No DOM and no requests here.
 */
import { ACTIVE_STATES, IAttempt, IJob, IJobRow, isRestricted } from './types';

// -- numbers ------------------------------------------------------------------------------

/**
 * The one number format of the charts, the compare table and the sweep labels: up to 4
 * significant digits, exponent notation below 1e-3 and from 1e6 on (`1.235e-5`). Integers
 * below 1e6 stay exact, so steps and epochs are not rounded. Never localised: the numbers
 * read as the Python values a user types in `%%train` (`lr=0.001`, not `0,001`).
 */
export function formatNumber(value: number): string {
  if (!Number.isFinite(value)) {
    return String(value);
  }
  const size = Math.abs(value);
  if (Number.isInteger(value) && size < 1e6) {
    return String(value);
  }
  const rounded = Number(value.toPrecision(4));
  return size !== 0 && (size < 1e-3 || size >= 1e6) ? rounded.toExponential() : String(rounded);
}

/** A param or metric value as text: numbers in the one number format, strings as they are. */
export function valueText(value: unknown): string {
  if (value === undefined || value === null) {
    return '';
  }
  if (typeof value === 'number') {
    return formatNumber(value);
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

const SWEEP_KEYS_SHOWN = 3;
const SWEEP_VALUES_LISTED = 3;

/** `lr=0.001…0.1` for numbers, `opt=adam|sgd` for a few other values, `seed: 12 values`. */
function sweepRange(key: string, values: unknown[]): string {
  if (values.every(v => typeof v === 'number')) {
    const numbers = values as number[];
    return `${key}=${formatNumber(Math.min(...numbers))}…${formatNumber(Math.max(...numbers))}`;
  }
  const distinct = [...new Set(values.map(valueText))];
  return distinct.length <= SWEEP_VALUES_LISTED
    ? `${key}=${distinct.join('|')}`
    : `${key}: ${distinct.length} values`;
}

/**
 * A sweep group's label: the params that differ between its jobs and how many jobs it has,
 * e.g. `lr=0.001…0.1, 4 jobs`. With no differing param, the jobs' shared name, else `group`
 * (the group's id).
 */
export function sweepLabel(group: string, jobs: readonly IJobRow[]): string {
  const count = `${jobs.length} job${jobs.length === 1 ? '' : 's'}`;
  const params = jobs.map(job => (isRestricted(job) ? {} : (job.params ?? {})));
  const keys = [...new Set(params.flatMap(p => Object.keys(p)))].sort();
  const differing = keys.filter(
    key => new Set(params.map(p => JSON.stringify(p[key] ?? null))).size > 1
  );
  if (differing.length === 0) {
    const names = new Set(jobs.map(job => job.name));
    return `${names.size === 1 ? jobs[0].name : group}, ${count}`;
  }
  const shown = differing.slice(0, SWEEP_KEYS_SHOWN).map(key =>
    sweepRange(
      key,
      params.map(p => p[key]).filter(v => v !== undefined)
    )
  );
  const more = differing.length - SWEEP_KEYS_SHOWN;
  if (more > 0) {
    shown.push(`+${more} more`);
  }
  return `${shown.join(', ')}, ${count}`;
}

// -- times ------------------------------------------------------------------------------

/** Epoch seconds of an ISO 8601 time (the API's `…Z` strings); null for anything else. */
export function toSeconds(value: string | null | undefined): number | null {
  if (typeof value !== 'string' || value === '') {
    return null;
  }
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms / 1000;
}

/** `45s`, `3m 20s`, `2h 05m`, `3d 4h`. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) {
    return '';
  }
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  }
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function formatBytes(bytes: number | null | undefined): string {
  if (!bytes) {
    return '0';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${units[unit]}`;
}

/** Local time; the date too unless it is today. */
export function formatTime(value: string | null | undefined): string {
  const s = toSeconds(value);
  if (s === null) {
    return '';
  }
  const date = new Date(s * 1000);
  const time = date.toLocaleTimeString(undefined, {
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit'
  });
  if (date.toDateString() === new Date().toDateString()) {
    return time;
  }
  return `${date.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric' })} ${time}`;
}

/** The attempt holding resources now, if any. */
export function currentAttempt(job: IJob): IAttempt | null {
  const last = job.attempts.length ? job.attempts[job.attempts.length - 1] : null;
  if (last && ACTIVE_STATES.has(last.state) && !last.ended) {
    return last;
  }
  return null;
}

/** GPU ids held by the running attempt, e.g. `0,1`; empty when none are held. */
export function gpusHeld(job: IJob): string {
  const attempt = currentAttempt(job);
  return attempt && attempt.gpu_ids.length ? attempt.gpu_ids.join(',') : '';
}

/**
 * `n/m`: the latest attempt out of the server's `attempts_allowed`. Attempts lost to the
 * infrastructure and manual retries do not use up the budget, so `n` can pass it; then
 * `m` is `n`.
 */
export function attemptsText(job: IJob): string {
  const n = job.attempts.length ? job.attempts[job.attempts.length - 1].n : 0;
  return `${n}/${Math.max(n, job.attempts_allowed)}`;
}

/** The server's `progress.fraction` (a succeeded job without one counts as done). */
export function progressFraction(job: IJob): number | null {
  const fraction = job.progress?.fraction;
  if (typeof fraction === 'number' && Number.isFinite(fraction)) {
    return Math.max(0, Math.min(1, fraction));
  }
  return job.state === 'succeeded' ? 1 : null;
}

/** `step/total`, or `step` when the total is unknown; empty without progress. */
export function stepText(job: IJob): string {
  const p = job.progress;
  if (!p || p.step === null || p.step === undefined) {
    return '';
  }
  return p.total !== null && p.total !== undefined ? `${p.step}/${p.total}` : `${p.step}`;
}

/**
 * Seconds left, extrapolating the rate between the attempt's start and the last
 * progress report. `now` is server time (epoch seconds) so a skewed browser clock
 * does not distort it.
 */
export function etaSeconds(job: IJob, now: number): number | null {
  if (job.state !== 'running') {
    return null;
  }
  // The server's estimate is the whole job's (from past runs of its name); a progress bar's
  // rate may be one epoch's.
  const expectedEnd = toSeconds(job.estimated_end);
  if (expectedEnd !== null) {
    return Math.max(0, expectedEnd - now);
  }
  const fraction = progressFraction(job);
  if (fraction === null || fraction <= 0) {
    return null;
  }
  if (fraction >= 1) {
    return 0;
  }
  const attempt = currentAttempt(job);
  const started = toSeconds(attempt?.started ?? job.started);
  const updated = reportedAt(job) ?? now;
  if (started === null || updated <= started) {
    return null;
  }
  const rate = fraction / (updated - started);
  return Math.max(0, (1 - fraction) / rate - Math.max(0, now - updated));
}

/** When the last progress report arrived, in epoch seconds. */
function reportedAt(job: IJob): number | null {
  return toSeconds(job.progress.updated ?? null);
}

/** Run time for started jobs (to the end or to now), waiting time for the others. */
export function elapsedSeconds(job: IJobRow, now: number): number | null {
  const started = toSeconds(job.started);
  const ended = toSeconds(job.ended);
  if (started !== null) {
    return (ended ?? now) - started;
  }
  const created = toSeconds(job.created);
  if (created === null) {
    return null;
  }
  return (ended ?? (job.terminal ? created : now)) - created;
}

// -- MLflow ---------------------------------------------------------------------------

// The tracking bridge adds `warning`, `metrics` and `model` to a job's `mlflow` links; the
// contract's `MlflowLinks` allows them as extra fields, so they are checked here.

function record(value: unknown): Record<string, unknown> | null {
  return value && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : null;
}

/** Why the job's MLflow run could not be written or read, or empty. */
export function mlflowWarning(job: IJob): string {
  const warning = job.mlflow.warning;
  return typeof warning === 'string' ? warning : '';
}

/** The last value of each metric logged to MLflow (empty when none is known). */
export function mlflowMetrics(job: IJob): Record<string, unknown> {
  return record(job.mlflow.metrics) ?? {};
}

/** `name v3 @alias` of the model registered from the job, or empty. */
export function mlflowModelText(job: IJob): string {
  const model = record(job.mlflow.model);
  if (!model || typeof model.name !== 'string') {
    return '';
  }
  const alias = typeof model.alias === 'string' && model.alias ? ` @${model.alias}` : '';
  return `${model.name} v${String(model.version ?? '')}${alias}`;
}

export function priorityLabel(job: IJobRow): string {
  return job.priority_class || String(job.priority);
}

/**
 * `#3 in queue · starts ~14:05` for a waiting job the server placed in its queue (the
 * expected start where past run times tell); empty otherwise.
 */
export function queueText(job: IJobRow): string {
  const n = job.queue_position;
  if (typeof n !== 'number' || n <= 0) {
    return '';
  }
  const start = clockTime(job.estimated_start);
  return start ? `#${n} in queue · starts ~${start}` : `#${n} in queue`;
}

/** `14:05` (local) for an ISO time; empty when there is none. */
export function clockTime(value: string | null | undefined): string {
  const s = toSeconds(value);
  return s === null
    ? ''
    : new Date(s * 1000).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/** `re-run 2× after a restart`, or empty when the job's code never had to run again. */
export function reexecutionText(job: IJob): string {
  const n = job.reexecutions || 0;
  return n > 0 ? `re-run ${n}× after a restart` : '';
}

export function reexecutionTitle(job: IJob): string {
  const n = job.reexecutions || 0;
  const times = n === 1 ? 'once' : `${n} times`;
  return (
    `The job's code had started and was run again ${times} because a worker was lost ` +
    'or the trainorch service was stopped. This was not the fault of the job, and it ' +
    'did not use up its retries.'
  );
}

// -- clone to cell ------------------------------------------------------------------

const SAFE_SHELL = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Quote for `shlex.split`, which is how `%%train` reads its line. */
export function shellQuote(text: string): string {
  if (text !== '' && SAFE_SHELL.test(text)) {
    return text;
  }
  return `'${text.replace(/'/g, `'"'"'`)}'`;
}

// Text YAML reads back as the same string when left unquoted: it starts with a letter,
// `_` or `/` (so it is no number), has no quotes, brackets or backslashes, and none of
// the `: `/` #` sequences that would start a mapping or a comment.
const YAML_PLAIN = /^[A-Za-z_/][^'"\\{}[\],\n\t]*$/;
const YAML_AMBIGUOUS = /:\s|:$|\s#|\s$/;
const YAML_SPECIAL = /^(y|n|yes|no|true|false|on|off|null)$/i;

/**
 * A value as `k=v` text that the magic's YAML reading turns back into the same
 * value: strings that YAML would read as something else are quoted.
 */
export function yamlValue(value: unknown): string {
  if (value === null || value === undefined) {
    return 'null';
  }
  if (typeof value === 'boolean') {
    return value ? 'true' : 'false';
  }
  if (typeof value === 'number') {
    return Number.isFinite(value) ? String(value) : JSON.stringify(String(value));
  }
  if (typeof value === 'string') {
    const plain =
      YAML_PLAIN.test(value) && !YAML_AMBIGUOUS.test(value) && !YAML_SPECIAL.test(value);
    return plain ? value : JSON.stringify(value);
  }
  return JSON.stringify(value);
}

/**
 * The text of a notebook cell that submits the same job again. Python jobs carry
 * their source; command jobs are rebuilt from their template and params, with the
 * rendered command kept as a comment for reference.
 */
export function cloneCellSource(job: IJob): string {
  const spec = job.spec;
  const resources = spec?.resources ?? job.resources;
  const template = job.template?.name || spec?.template?.name || '';
  const command = (spec?.kind ?? job.kind) === 'command';
  const flags: string[] = ['%%train'];
  flags.push('--name', shellQuote(job.name));
  flags.push('--priority', shellQuote(job.priority_class || String(job.priority)));
  flags.push('--gpus', String(resources?.gpus ?? 0));
  flags.push('--cpus', String(resources?.cpus ?? 1));
  flags.push('--retries', String(spec?.retries?.max ?? job.max_retries ?? 0));
  if (command || (template && template !== 'python-cell')) {
    flags.push('--template', shellQuote(template || 'command'));
  }
  if (resources?.memory) {
    flags.push('--memory', String(resources.memory));
  }
  const timeout = spec?.timeout ?? job.timeout;
  if (timeout) {
    flags.push('--timeout', `${timeout}s`);
  }
  const params = spec?.params ?? job.params ?? {};
  for (const [key, value] of Object.entries(params)) {
    flags.push(shellQuote(`${key}=${yamlValue(value)}`));
  }
  const head = flags.join(' ');
  if (command) {
    const text = spec?.command ?? '';
    const comment = text
      .split('\n')
      .map((line, i) => (i === 0 ? `# command: ${line}` : `#   ${line}`))
      .join('\n');
    return `${head}\n${comment}`;
  }
  return `${head}\n${spec?.source ?? ''}`;
}
