/**
 * A bounded window onto one job's log.
 *
 * The API only reads forward from a cursor (`after`, line ids grow), so to scroll
 * back the window remembers, for every chunk it dropped from its top, the cursor
 * that chunk started after. Memory stays at `maxLines` lines plus one number per
 * dropped chunk, however long the log.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { AnsiUp } from 'ansi_up';
import stripAnsi from 'strip-ansi';

import { isUnavailable } from './request';
import { ILogLine, ILogPage } from './types';

export type LogFetcher = (after: number) => Promise<ILogPage>;

/** A page at least this long suggests more lines are waiting behind it. */
const FULL_PAGE = 1000;

export class LogTail {
  constructor(options: LogTail.IOptions) {
    this.jobId = options.jobId;
    this.attempt = options.attempt ?? null;
    this._maxLines = Math.max(options.maxLines ?? 500, 20);
    this._chunk = Math.max(1, Math.min(options.chunk ?? 100, Math.floor(this._maxLines / 2)));
    this._fetch = options.fetch;
  }

  readonly jobId: string;
  /** The attempt shown, or null for every attempt in order. */
  readonly attempt: number | null;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The lines in the window, oldest first. */
  get lines(): readonly ILogLine[] {
    return this._lines;
  }

  /** Whether lines before the window can be loaded. */
  get hasOlder(): boolean {
    return this._older.length > 0;
  }

  /** Whether the window ends at the newest line known. */
  get atEnd(): boolean {
    return this._atEnd;
  }

  /** Whether new lines are appended as they arrive (the view is scrolled to the end). */
  get following(): boolean {
    return this._following;
  }

  get finished(): boolean {
    return this._finished;
  }

  get loading(): boolean {
    return this._busy;
  }

  get error(): string | null {
    return this._error;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    Signal.clearData(this);
  }

  /** Load the tail of the log (reading forward through it, keeping only the window). */
  start(): Promise<void> {
    return this.fetchNewer();
  }

  /**
   * Read lines after the window. Calls made while a read is running are folded into
   * one more read after it, so a burst of change events costs at most two requests.
   */
  async fetchNewer(): Promise<void> {
    if (this._disposed) {
      return;
    }
    if (this._busy) {
      this._again = true;
      return;
    }
    if (this._started && !this._following) {
      // The reader is scrolled up: leave the window alone and remember there is more.
      if (this._atEnd) {
        this._atEnd = false;
        this._changed.emit();
      }
      return;
    }
    this._busy = true;
    this._started = true;
    try {
      do {
        this._again = false;
        const catchingUp = !this._atEnd;
        for (;;) {
          const page = await this._fetch(this._endCursor());
          if (this._disposed) {
            return;
          }
          this._error = null;
          this._finished = page.finished;
          this._append(page.lines);
          if (page.lines.length === 0) {
            this._atEnd = true;
            break;
          }
          if (!catchingUp && page.lines.length < FULL_PAGE) {
            break;
          }
        }
        this._changed.emit();
      } while (this._again && !this._disposed);
    } catch (error) {
      this._setError(error);
      this._changed.emit();
    } finally {
      this._busy = false;
    }
  }

  /** Whether the whole log is in the window (`loadAll`): nothing is dropped any more. */
  get complete(): boolean {
    return this._complete;
  }

  /**
   * Read the whole log (of the attempt shown) from its start: every page of
   * `jobs/{id}/logs?attempt=&after=` until one comes back empty.
   */
  async readAll(): Promise<ILogLine[]> {
    let lines: ILogLine[] = [];
    let after = 0;
    for (;;) {
      const page = await this._fetch(after);
      if (!page.lines.length) {
        return lines;
      }
      lines = lines.concat(page.lines);
      after = page.lines[page.lines.length - 1].id;
    }
  }

  /**
   * Put the whole log in the window, instead of a chunk of older lines per scroll; the
   * window stops dropping lines (a long log then costs its length in memory and DOM).
   */
  async loadAll(): Promise<void> {
    if (this._disposed || this._busy || this._complete) {
      return;
    }
    this._busy = true;
    this._changed.emit();
    try {
      const lines = await this.readAll();
      if (this._disposed) {
        return;
      }
      this._lines = lines;
      this._older = [];
      this._beforeFirst = 0;
      this._maxLines = Number.POSITIVE_INFINITY;
      this._complete = true;
      this._atEnd = true;
      this._error = null;
    } catch (error) {
      this._setError(error);
    } finally {
      this._busy = false;
    }
    this._changed.emit();
    if (this._again) {
      // Lines announced while the log was read: read them now.
      this._again = false;
      void this.fetchNewer();
    }
  }

  /** Load the chunk before the window; the window then drops lines at its end. */
  async loadOlder(): Promise<void> {
    if (this._disposed || this._busy || !this._older.length) {
      return;
    }
    this._busy = true;
    const cursor = this._older.pop() as number;
    try {
      const page = await this._fetch(cursor);
      if (this._disposed) {
        return;
      }
      const limit = this._beforeFirst;
      const chunk = page.lines.filter(line => line.id <= limit);
      this._lines = chunk.concat(this._lines);
      this._beforeFirst = cursor;
      if (this._lines.length > this._maxLines) {
        this._lines = this._lines.slice(0, this._maxLines);
        this._atEnd = false;
        this._following = false;
      }
      this._error = null;
    } catch (error) {
      this._older.push(cursor);
      this._setError(error);
    } finally {
      this._busy = false;
    }
    this._changed.emit();
  }

  /** The view reports whether it is scrolled to the end. */
  setFollowing(value: boolean): void {
    if (value === this._following) {
      return;
    }
    this._following = value;
    if (value && !this._atEnd) {
      void this.fetchNewer();
    }
  }

  /** A service that is away is shown once by the panel, not under every log. */
  private _setError(error: unknown): void {
    this._error = isUnavailable(error) ? null : (error as Error).message || String(error);
  }

  private _endCursor(): number {
    return this._lines.length ? this._lines[this._lines.length - 1].id : this._beforeFirst;
  }

  private _append(lines: ILogLine[]): void {
    if (!lines.length) {
      return;
    }
    this._lines = this._lines.concat(lines);
    // Drop whole chunks so each remembered cursor reloads exactly one chunk.
    let drop = 0;
    while (this._lines.length - drop > this._maxLines) {
      this._older.push(this._beforeFirst);
      drop += this._chunk;
      this._beforeFirst = this._lines[drop - 1].id;
    }
    if (drop) {
      this._lines = this._lines.slice(drop);
    }
  }

  private _fetch: LogFetcher;
  private _maxLines: number;
  private _chunk: number;
  private _lines: ILogLine[] = [];
  /** Cursor before the window's first line (0: the log's start). */
  private _beforeFirst = 0;
  /** Cursors of dropped chunks; the last one is the chunk just before the window. */
  private _older: number[] = [];
  private _atEnd = false;
  private _complete = false;
  private _following = true;
  private _finished = false;
  private _started = false;
  private _busy = false;
  private _again = false;
  private _error: string | null = null;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}

export namespace LogTail {
  export interface IOptions {
    jobId: string;
    attempt?: number | null;
    /** Lines kept in the window (and so in the DOM). */
    maxLines?: number;
    /** Lines dropped or reloaded at a time when scrolling through a long log. */
    chunk?: number;
    /** Reads the lines after a cursor (of the attempt shown). */
    fetch: LogFetcher;
  }
}

/** A log line ready to show: its text as escaped HTML with ANSI colours, and as plain text. */
export interface IRenderedLine {
  line: ILogLine;
  /**
   * HTML from ansi_up with `escape_html` on (the job's own text can never become markup),
   * or null for a line without colour: it is shown as a text node.
   */
  html: string | null;
  /** The text without its escape sequences: what search and download see. */
  plain: string;
}

/** Text that ansi_up returns unchanged unless a colour or style is still set. */
const PROBE = 'x';

/**
 * Renders lines in order with one converter, so that a colour set on one line and reset
 * on a later one carries over, as in a terminal. Each line is rendered once: appended
 * lines continue where the last render stopped (a live log costs its new lines, not its
 * length), and lines without escape sequences skip ansi_up while no colour is set (it
 * costs several microseconds a line: most of a second for 100,000 lines).
 */
export class LogRenderer {
  render(lines: readonly ILogLine[]): IRenderedLine[] {
    return lines.map((line, i) => {
      const known = this._rendered.get(line);
      if (known) {
        return known;
      }
      if (i === 0 || lines[i - 1] !== this._last) {
        // Not a continuation of the last render (older lines, or another log): start afresh.
        this._converter = newConverter();
        this._coloured = false;
      }
      const rendered = this._render(line);
      this._rendered.set(line, rendered);
      this._last = line;
      return rendered;
    });
  }

  private _render(line: ILogLine): IRenderedLine {
    const text = line.text;
    if (!this._coloured && !text.includes('\x1b')) {
      return { line, html: null, plain: text };
    }
    const html = this._converter.ansi_to_html(text);
    this._coloured = this._converter.ansi_to_html(PROBE) !== PROBE;
    return { line, html, plain: stripAnsi(text) };
  }

  private _rendered = new WeakMap<ILogLine, IRenderedLine>();
  private _converter = newConverter();
  private _coloured = false;
  private _last: ILogLine | null = null;
}

function newConverter(): AnsiUp {
  const converter = new AnsiUp();
  converter.escape_html = true;
  // No links from job output: ansi_up drops an OSC 8 hyperlink whose scheme is not allowed
  // (its text too), so a job cannot put a link in the panel that navigates JupyterLab away.
  converter.url_allowlist = {};
  return converter;
}

/** Render a few lines once (see `LogRenderer`). */
export function renderLines(lines: readonly ILogLine[]): IRenderedLine[] {
  return new LogRenderer().render(lines);
}

/**
 * Lines that look like the start of an error: a Python traceback, or a word that names an
 * error, exception or failed test. Case matters, so that `errors=0` or `failed: 0` in
 * ordinary progress output are not taken for one.
 */
export const ERROR_PATTERN = /Traceback|Error|Exception|FAILED/;

/** The first line that looks like an error (`ERROR_PATTERN`), or null. */
export function firstErrorLine(lines: readonly ILogLine[]): ILogLine | null {
  return lines.find(line => ERROR_PATTERN.test(stripAnsi(line.text))) ?? null;
}

/** Lines as a plain text file: escape sequences removed, one line each. */
export function logFileText(lines: readonly ILogLine[]): string {
  return lines.map(line => stripAnsi(line.text) + '\n').join('');
}

/** Save text as a file through the browser's download. */
export function saveText(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/plain;charset=utf-8' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.style.display = 'none';
  document.body.appendChild(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}
