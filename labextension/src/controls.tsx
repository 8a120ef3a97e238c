/**
 * Small controls and hooks the panel's views share.
 */
import { ISignal } from '@lumino/signaling';
import * as React from 'react';

/** Re-render when `signal` fires. */
export function useSignal(signal: ISignal<unknown, unknown>): void {
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    const slot = (): void => setCount(count => count + 1);
    signal.connect(slot);
    return () => {
      signal.disconnect(slot);
    };
  }, [signal]);
}

/** Re-render every second while `active`, so elapsed times and ETAs move. */
export function useTick(active: boolean): void {
  const [, setCount] = React.useState(0);
  React.useEffect(() => {
    if (!active) {
      return;
    }
    const timer = window.setInterval(() => setCount(count => count + 1), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
}

/** Typing pauses this long before a filter is applied (one read per pause, not per key). */
const TYPING_PAUSE_MS = 80;

/** A text input that reports its value once typing pauses. */
export function DebouncedInput(props: {
  value: string;
  onChange: (value: string) => void;
  placeholder: string;
  className: string;
  title?: string;
}): JSX.Element {
  const { value, onChange } = props;
  const [text, setText] = React.useState(value);
  React.useEffect(() => setText(value), [value]);
  React.useEffect(() => {
    if (text === value) {
      return;
    }
    const timer = window.setTimeout(() => onChange(text), TYPING_PAUSE_MS);
    return () => window.clearTimeout(timer);
  }, [text, value, onChange]);
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
}): JSX.Element {
  return (
    <label className={props.className} title={props.title}>
      <input
        type="checkbox"
        data-action={props.action}
        checked={props.checked}
        onChange={event => props.onChange(event.target.checked)}
      />
      {props.label}
    </label>
  );
}
