/**
 * The top of the sidebar: the header (who, how changes arrive) and the list's filters
 * (the cluster strip between them is in cluster.tsx).
 */
import { Button, HTMLSelect, refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { SortKey } from './api';
import { Connection } from './changes';
import { DebouncedInput, useSignal } from './controls';
import { IJobActions } from './jobparts';
import { TrainorchModel } from './model';
import { JOB_STATES } from './types';

const CONNECTION_TEXT: Record<Connection, string> = {
  connecting: 'connecting…',
  live: 'live',
  polling: 'polling',
  // The line below the header says it in full.
  reconnecting: ''
};

const CONNECTION_TITLE: Record<Connection, string> = {
  connecting: 'Opening the live channel',
  live: 'Changes arrive as they happen',
  polling: 'The live channel is unavailable: changes are read periodically while visible',
  reconnecting: 'The trainorch service does not answer (it may be restarting): trying again'
};

export function Header(props: { model: TrainorchModel; actions: IJobActions }): JSX.Element {
  const { model } = props;
  useSignal(model.changes.connectionChanged);
  useSignal(model.meChanged);
  const connection = model.changes.connection;
  const me = model.me;
  return (
    <>
      <div className="trainorch-header">
        <span className="trainorch-title">Training jobs</span>
        {me && (
          <span
            className="trainorch-me"
            data-field="me"
            title={`Signed in as ${me.name}${me.admin ? ' (admin)' : ''}${
              me.mode === 'hub' ? ' on a shared JupyterHub' : ''
            }`}
          >
            {me.name}
            {me.admin && me.mode === 'hub' ? ' · admin' : ''}
          </span>
        )}
        <span
          className={`trainorch-connection trainorch-connection-${connection}`}
          data-connection={connection}
          title={CONNECTION_TITLE[connection]}
          aria-label={CONNECTION_TITLE[connection]}
        >
          {CONNECTION_TEXT[connection]}
        </span>
        <Button
          minimal
          small
          className="trainorch-icon-button"
          data-action="refresh"
          title="Refresh"
          onClick={() => props.actions.refresh()}
        >
          <refreshIcon.react tag="span" />
        </Button>
      </div>
      {connection === 'reconnecting' && (
        <div
          className="trainorch-reconnecting"
          role="status"
          title={model.client.unavailable ?? undefined}
        >
          Reconnecting to the trainorch service…
        </div>
      )}
    </>
  );
}

export function Filters(props: { model: TrainorchModel }): JSX.Element {
  const { model } = props;
  const list = model.list;
  useSignal(list.changed);
  useSignal(model.meChanged);
  const q = list.query;
  const mine = model.mineUser;
  const onUser = React.useCallback((user: string) => list.setQuery({ user }), [list]);
  const onSearch = React.useCallback((search: string) => list.setQuery({ search }), [list]);
  const stateOptions = [
    { value: 'all', label: 'All states' },
    { value: 'active', label: 'Active' },
    ...JOB_STATES.map(s => ({ value: s, label: s }))
  ];
  return (
    <div className="trainorch-filters">
      <div className="trainorch-filter-row">
        <HTMLSelect
          className="trainorch-filter-state"
          aria-label="State"
          value={q.state}
          options={stateOptions}
          onChange={event => list.setQuery({ state: event.target.value })}
        />
        <HTMLSelect
          className="trainorch-filter-sort"
          aria-label="Sort"
          title="Dispatch order: higher priority first, then the earlier submission"
          value={q.sort}
          options={[
            { value: 'newest', label: 'Newest first' },
            { value: 'priority', label: 'Dispatch order' }
          ]}
          onChange={event => list.setQuery({ sort: event.target.value as SortKey })}
        />
      </div>
      <div className="trainorch-filter-row">
        <div className="trainorch-segmented" role="group" aria-label="User">
          <button
            className={`trainorch-segment${q.user === '' ? ' trainorch-mod-active' : ''}`}
            data-action="user-all"
            onClick={() => list.setQuery({ user: '' })}
          >
            All
          </button>
          <button
            className={`trainorch-segment${mine && q.user === mine ? ' trainorch-mod-active' : ''}`}
            data-action="user-mine"
            disabled={!mine}
            title={mine ? `Your jobs (${mine})` : 'Finding out who you are…'}
            onClick={() => list.setQuery({ user: mine })}
          >
            Mine
          </button>
        </div>
        <DebouncedInput
          className="trainorch-filter-user"
          placeholder="user"
          title="Show the jobs of this user"
          value={q.user}
          onChange={onUser}
        />
      </div>
      <DebouncedInput
        className="trainorch-filter-search"
        placeholder="Search name or id"
        value={q.search}
        onChange={onSearch}
        immediate
      />
    </div>
  );
}
