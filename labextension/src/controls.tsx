/**
 * Small controls and hooks the panel's views share.
 */
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

/** Whether the code running now handles the user's input (a click, a key, a change). */
function handlingInput(): boolean {
  const event = window.event;
  return event instanceof UIEvent || event?.type === 'change' || event?.type === 'submit';
}

/**
 * Re-render when `signal` fires. What the user did renders at once (a controlled checkbox
 * must not flicker); what arrived from the server renders as a transition, which React
 * renders in slices and interrupts for input, so a burst of changes never blocks a key.
 */
export function useSignal(signal: ISignal<unknown, unknown>): void {
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    const bump = (): void => setCount(count => count + 1);
    const slot = (): void => (handlingInput() ? bump() : React.startTransition(bump));
    signal.connect(slot);
    return () => {
      signal.disconnect(slot);
    };
  }, [signal]);
}

const CLOCK_SENDER = {};

/** One timer for every clock on screen, so that they all move in one render a second. */
const clock = new Signal<typeof CLOCK_SENDER, void>(CLOCK_SENDER);
let clockUsers = 0;
let clockTimer = 0;

/** Re-render every second while `active`, so elapsed times and ETAs move. */
export function useTick(active: boolean): void {
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    if (!active) {
      return;
    }
    const slot = (): void => React.startTransition(() => setCount(count => count + 1));
    clock.connect(slot);
    if (clockUsers++ === 0) {
      clockTimer = window.setInterval(() => clock.emit(), 1000);
    }
    return () => {
      clock.disconnect(slot);
      if (--clockUsers === 0) {
        window.clearInterval(clockTimer);
      }
    };
  }, [active]);
}

/**
 * Content that changes with the time (an elapsed time, an ETA), rendered again every
 * second while `active` without rendering its parent again.
 */
export function EverySecond(props: {
  active: boolean;
  children: () => React.ReactNode;
}): JSX.Element {
  useTick(props.active);
  return <>{props.children()}</>;
}

/** Typing pauses this long before a filter is applied (one read per pause, not per key). */
const TYPING_PAUSE_MS = 80;

/**
 * A text input that reports its value once typing pauses, or on every key with `immediate`
 * (for a filter whose consumer answers from what it shows at once and reads the server
 * at most once at a time).
 */
export function DebouncedInput(props: {
  value: string;
  onChange: (value: string) => void;
  placeholder: string;
  className: string;
  title?: string;
  immediate?: boolean;
}): JSX.Element {
  const { value, onChange, immediate } = props;
  const [text, setText] = React.useState(value);
  // What this input last reported: its echo back as `value` must not overwrite keys typed
  // since (a fast typist's "pr" would become "p"); a value set elsewhere still shows.
  const reported = React.useRef(value);
  React.useEffect(() => {
    if (value !== reported.current) {
      reported.current = value;
      setText(value);
    }
  }, [value]);
  React.useEffect(() => {
    if (text === reported.current) {
      return;
    }
    const report = (): void => {
      reported.current = text;
      onChange(text);
    };
    if (immediate) {
      report();
      return;
    }
    const timer = window.setTimeout(report, TYPING_PAUSE_MS);
    return () => window.clearTimeout(timer);
  }, [text, onChange, immediate]);
  return (
    <input
      type="search"
      className={`jp-mod-styled trainorch-input ${props.className}`}
      placeholder={props.placeholder}
      title={props.title}
      value={text}
      onChange={event => setText(event.target.value)}
      onKeyDown={event => {
        if (event.key === 'Enter') {
          reported.current = text;
          onChange(text);
        }
      }}
    />
  );
}

/** Keep a click inside a control from also selecting the row around it. */
export function stopPropagation(event: React.SyntheticEvent): void {
  event.stopPropagation();
}

/** A labelled checkbox; `action` goes to `data-action` (the browser tests find it so). */
export function CheckboxOption(props: {
  action: string;
  label: string;
  title: string;
  checked: boolean;
  onChange: (checked: boolean) => void;
  className: string;
  disabled?: boolean;
}): JSX.Element {
  return (
    <label className={props.className} title={props.title}>
      <input
        type="checkbox"
        data-action={props.action}
        checked={props.checked}
        disabled={props.disabled}
        onChange={event => props.onChange(event.target.checked)}
      />
      {props.label}
    </label>
  );
}
