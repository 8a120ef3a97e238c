/**
 * Small controls the panel's views share.
 */
import * as React from 'react';

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
