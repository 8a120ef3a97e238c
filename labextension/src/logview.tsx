/**
 * The log viewer of a job's tab: ANSI colours (ansi_up), search with a match count and
 * next/previous, only-matches filter, wrap toggle, jump to the first error, load-all and
 * download.
 *
 * The rows are virtualised (@tanstack/react-virtual): only those in view, and a few
 * around them, are in the DOM, so a log of 100,000 lines scrolls as one of 100. Rows
 * are measured once rendered, since wrapped lines take several text lines.
 *
 * Log lines go through ansi_up, which escapes their text and adds only its own colour
 * spans; nothing else from the job becomes markup.
 */
import { Button } from '@jupyterlab/ui-components';
import { useVirtualizer } from '@tanstack/react-virtual';
import * as React from 'react';

import { errorMessage } from './api';
import { CheckboxOption, useSignal } from './controls';
import { IRenderedLine, LogRenderer, LogTail, firstErrorLine, logFileText, saveText } from './logs';

/** The height of an unwrapped row, before rows are measured. */
const ROW_PX = 18;
/** Rows rendered beyond each edge of the view, so fast scrolling shows no gap. */
const OVERSCAN = 30;
/** This close to an edge (px) counts as at it. */
const EDGE_PX = 24;
/** Scroll events this soon after the view scrolled itself are its own, not the reader's. */
const OWN_SCROLL_MS = 200;

/**
 * A log row's content: ansi_up's HTML for a line with colours (ansi_up escapes the job's
 * text, escape_html being on, and adds only its own spans), else its text as a text node.
 */
export function lineContent(
  rendered: IRenderedLine
): Pick<React.HTMLAttributes<HTMLDivElement>, 'children' | 'dangerouslySetInnerHTML'> {
  return rendered.html === null
    ? { children: rendered.line.text }
    : { dangerouslySetInnerHTML: { __html: rendered.html } };
}

/** Ids of the rendered lines whose plain text contains `needle` (already lower-cased). */
function matchIds(rendered: readonly IRenderedLine[], needle: string): number[] {
  return needle
    ? rendered.filter(r => r.plain.toLowerCase().includes(needle)).map(r => r.line.id)
    : [];
}

/** Ids of the lines that begin another attempt than the line before them. */
function attemptStarts(rendered: readonly IRenderedLine[]): Set<number> {
  const starts = new Set<number>();
  for (let i = 1; i < rendered.length; i++) {
    if (rendered[i].line.attempt !== rendered[i - 1].line.attempt) {
      starts.add(rendered[i].line.id);
    }
  }
  return starts;
}

export function LogView(props: { tail: LogTail; switcher: React.ReactNode }): JSX.Element {
  const { tail } = props;
  useSignal(tail.changed);
  const scrollRef = React.useRef<HTMLDivElement>(null);
  const lines = tail.lines;
  const [renderer] = React.useState(() => new LogRenderer());
  const rendered = React.useMemo(() => renderer.render(lines), [renderer, lines]);
  const starts = React.useMemo(() => attemptStarts(rendered), [rendered]);
  const [search, setSearch] = React.useState('');
  const [current, setCurrent] = React.useState(0);
  const [onlyMatches, setOnlyMatches] = React.useState(false);
  const [wrap, setWrap] = React.useState(true);
  const [errorId, setErrorId] = React.useState<number | null>(null);
  const [note, setNote] = React.useState<string | null>(null);
  const [downloading, setDownloading] = React.useState(false);

  const needle = search.trim().toLowerCase();
  const matches = React.useMemo(() => matchIds(rendered, needle), [rendered, needle]);
  const index = matches.length ? Math.min(current, matches.length - 1) : -1;
  const currentId = index >= 0 ? matches[index] : null;
  const matchSet = React.useMemo(() => new Set(matches), [matches]);
  const filtering = onlyMatches && needle !== '';
  const rows = React.useMemo(
    () => (filtering ? rendered.filter(r => matchSet.has(r.line.id)) : rendered),
    [filtering, rendered, matchSet]
  );
  const rowOf = React.useMemo(() => new Map(rows.map((r, i) => [r.line.id, i])), [rows]);

  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW_PX,
    overscan: OVERSCAN,
    getItemKey: i => rows[i].line.id
  });

  // A line to bring into view after the next render (a search match, the first error).
  const reveal = React.useRef<number | null>(null);
  // The line at the top of the view when older lines were asked for: it stays there.
  const anchor = React.useRef<number | null>(null);
  const ownScroll = React.useRef(0);
  // How many rows there were when the view last kept to the end.
  const followed = React.useRef(0);
  const scrollTo = (row: number, align: 'start' | 'center' | 'end'): void => {
    ownScroll.current = Date.now();
    virtualizer.scrollToIndex(row, { align });
  };

  React.useLayoutEffect(() => {
    virtualizer.measure();
  }, [wrap]);

  React.useLayoutEffect(() => {
    if (reveal.current !== null) {
      const row = rowOf.get(reveal.current);
      reveal.current = null;
      anchor.current = null;
      if (row !== undefined) {
        scrollTo(row, 'center');
      }
      return;
    }
    if (anchor.current !== null) {
      const row = rowOf.get(anchor.current);
      if (row !== undefined && row > 0) {
        scrollTo(row, 'start');
        anchor.current = null;
      }
      return;
    }
    // Only when lines came: renders of the reader's own scrolling must leave the view be.
    if (tail.following && rows.length && rows.length !== followed.current) {
      scrollTo(rows.length - 1, 'end');
    }
    followed.current = rows.length;
  });

  const onScroll = (): void => {
    const el = scrollRef.current;
    if (!el) {
      return;
    }
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < EDGE_PX;
    if (atBottom || Date.now() - ownScroll.current > OWN_SCROLL_MS) {
      tail.setFollowing(atBottom);
    }
    if (
      el.scrollTop < EDGE_PX &&
      !filtering &&
      tail.hasOlder &&
      !tail.loading &&
      anchor.current === null &&
      reveal.current === null &&
      rows.length
    ) {
      const top = virtualizer.getVirtualItems()[0];
      anchor.current = rows[top ? top.index : 0].line.id;
      void tail.loadOlder().then(() => {
        if (tail.lines[0]?.id === anchor.current) {
          anchor.current = null; // nothing was added
        }
      });
    }
  };

  /** Scroll to a line (and stop following the end, so it stays in view). */
  const goTo = (id: number | null): void => {
    if (id !== null) {
      tail.setFollowing(false);
      reveal.current = id;
    }
  };

  const onSearch = (value: string): void => {
    setSearch(value);
    setCurrent(0);
    goTo(matchIds(rendered, value.trim().toLowerCase())[0] ?? null);
  };

  const step = (by: number): void => {
    if (!matches.length) {
      return;
    }
    const next = (index + by + matches.length) % matches.length;
    setCurrent(next);
    goTo(matches[next]);
  };

  const jumpToError = async (): Promise<void> => {
    setNote(null);
    // The first error may lie before the window: read the whole log first.
    if (tail.hasOlder && !tail.complete) {
      await tail.loadAll();
    }
    const line = firstErrorLine(tail.lines);
    setErrorId(line ? line.id : null);
    if (line) {
      goTo(line.id);
    } else {
      setNote('No line looks like an error.');
    }
  };

  const download = async (): Promise<void> => {
    setNote(null);
    setDownloading(true);
    try {
      const all = await tail.readAll();
      const name = `${tail.jobId}${tail.attempt !== null ? `-attempt-${tail.attempt}` : ''}.log`;
      saveText(name, logFileText(all));
    } catch (error) {
      setNote(`Could not download the log: ${errorMessage(error)}`);
    } finally {
      setDownloading(false);
    }
  };

  return (
    <section className="trainorch-log-section">
      <div className="trainorch-section-title">
        Log{tail.attempt !== null ? ` #${tail.attempt}` : ''}
        <span className="trainorch-muted trainorch-log-status" data-field="log-status">
          {tail.loading && lines.length === 0
            ? 'loading…'
            : tail.finished && tail.atEnd
              ? 'ended'
              : tail.following
                ? 'following'
                : 'paused'}
        </span>
        <span className="trainorch-muted" data-field="log-lines">
          {lines.length.toLocaleString()} lines{tail.hasOlder ? ' (newest)' : ''}
        </span>
        {props.switcher}
      </div>
      <div className="trainorch-log-toolbar" role="toolbar" aria-label="Log tools">
        <input
          type="search"
          className="jp-mod-styled trainorch-log-search"
          data-action="log-search"
          placeholder="Search the log"
          aria-label="Search the log"
          title={
            tail.hasOlder
              ? 'Searches the lines loaded; "load all" first to search the whole log. Enter: next match, Shift+Enter: previous.'
              : 'Enter: next match, Shift+Enter: previous.'
          }
          value={search}
          onChange={event => onSearch(event.target.value)}
          onKeyDown={event => {
            if (event.key === 'Enter') {
              event.preventDefault();
              step(event.shiftKey ? -1 : 1);
            } else if (event.key === 'Escape') {
              onSearch('');
            }
          }}
        />
        {needle && (
          <span className="trainorch-muted trainorch-log-count" data-field="search-count">
            {matches.length ? `${index + 1}/${matches.length}` : 'no match'}
          </span>
        )}
        <Button
          minimal
          small
          data-action="search-prev"
          title="Previous match (Shift+Enter)"
          disabled={!matches.length}
          onClick={() => step(-1)}
        >
          ‹
        </Button>
        <Button
          minimal
          small
          data-action="search-next"
          title="Next match (Enter)"
          disabled={!matches.length}
          onClick={() => step(1)}
        >
          ›
        </Button>
        <CheckboxOption
          className="trainorch-log-option"
          action="log-filter"
          label="only matches"
          title="Show only the lines that match the search"
          checked={onlyMatches}
          onChange={setOnlyMatches}
        />
        <CheckboxOption
          className="trainorch-log-option"
          action="log-wrap"
          label="wrap"
          title="Wrap long lines"
          checked={wrap}
          onChange={setWrap}
        />
        <Button
          minimal
          small
          data-action="log-first-error"
          title="Jump to the first line containing Traceback, Error, Exception or FAILED (case-sensitive); reads the whole log when it is long"
          disabled={tail.loading}
          onClick={() => void jumpToError()}
        >
          first error
        </Button>
        {tail.hasOlder && !tail.complete && (
          <Button
            minimal
            small
            data-action="log-load-all"
            title="Load the whole log instead of older lines a chunk at a time"
            disabled={tail.loading}
            onClick={() => void tail.loadAll()}
          >
            load all
          </Button>
        )}
        <Button
          minimal
          small
          data-action="log-download"
          title={`Save the whole log${tail.attempt !== null ? ` of attempt ${tail.attempt}` : ''} as a text file`}
          disabled={downloading}
          onClick={() => void download()}
        >
          {downloading ? 'downloading…' : 'download'}
        </Button>
      </div>
      {tail.error && <div className="trainorch-error">{tail.error}</div>}
      {note && (
        <div className="trainorch-muted trainorch-log-note" data-field="log-note">
          {note}
        </div>
      )}
      {tail.hasOlder && !filtering && (
        <div className="trainorch-log-more">scroll up for older lines</div>
      )}
      {lines.length === 0 && !tail.loading && (
        <div className="trainorch-log-empty">No output yet.</div>
      )}
      {filtering && !matches.length && lines.length > 0 && (
        <div className="trainorch-log-empty">No line matches.</div>
      )}
      <div
        className={`trainorch-log${wrap ? '' : ' trainorch-log-nowrap'}`}
        ref={scrollRef}
        onScroll={onScroll}
        tabIndex={0}
        aria-label="Job log"
      >
        <div className="trainorch-log-rows" style={{ height: virtualizer.getTotalSize() }}>
          {virtualizer.getVirtualItems().map(item => {
            const { line } = rows[item.index];
            const classes = ['trainorch-log-line'];
            if (starts.has(line.id)) {
              classes.push('trainorch-log-line-attempt');
            }
            if (matchSet.has(line.id)) {
              classes.push('trainorch-log-match');
            }
            if (line.id === currentId) {
              classes.push('trainorch-log-match-current');
            }
            if (line.id === errorId) {
              classes.push('trainorch-log-error-line');
            }
            return (
              <div
                key={item.key}
                ref={virtualizer.measureElement}
                data-index={item.index}
                className={classes.join(' ')}
                style={{ transform: `translateY(${item.start}px)` }}
                data-line-id={line.id}
                data-stream={line.stream}
                data-attempt={line.attempt}
                title={starts.has(line.id) ? `attempt ${line.attempt}` : undefined}
                {...lineContent(rows[item.index])}
              />
            );
          })}
        </div>
      </div>
      {!tail.atEnd && !tail.loading && (
        <Button
          minimal
          small
          className="trainorch-log-follow"
          data-action="follow"
          onClick={() => {
            tail.setFollowing(true);
            if (rows.length) {
              scrollTo(rows.length - 1, 'end');
            }
          }}
        >
          newer lines — follow
        </Button>
      )}
    </section>
  );
}
