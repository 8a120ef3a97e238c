import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** Path of the REST API below the server's base URL. */
export const API_PATH = 'trainorch/api';

/**
 * The trainorch service (or the Jupyter server in front of it) is away for now, e.g.
 * restarting: the request may be made again later. `retryAfter` is the server's hint
 * in seconds, when it gave one.
 */
export class ServiceUnavailableError extends Error {
  constructor(
    message: string,
    readonly retryAfter: number | null = null
  ) {
    super(message);
    this.name = 'ServiceUnavailableError';
  }
}

export function isUnavailable(error: unknown): error is ServiceUnavailableError {
  return error instanceof ServiceUnavailableError;
}

/** Seconds of a `Retry-After` header (a number of seconds or an HTTP date), or null. */
export function retryAfterSeconds(value: string | null): number | null {
  if (!value) {
    return null;
  }
  const seconds = Number(value);
  if (Number.isFinite(seconds)) {
    return Math.max(0, seconds);
  }
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

/**
 * Call the trainorch REST API.
 *
 * @param endPoint path below `<baseUrl>/trainorch/api/`, query string included
 * @param init initial values for the request
 * @returns the decoded JSON body
 * @throws ServiceUnavailableError when the server cannot be reached, answers 503 with
 *   `Retry-After` (the service is restarting) or a proxy answers 502/504
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const requestUrl = URLExt.join(settings.baseUrl, API_PATH, endPoint);

  let response: Response;
  try {
    response = await ServerConnection.makeRequest(requestUrl, init, settings);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ServiceUnavailableError(`The Jupyter server did not answer: ${reason}`);
  }

  const text = await response.text();
  let data: unknown = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // Not JSON (a proxy's error page): keep the text for the message.
    }
  }

  if (!response.ok) {
    const message =
      data !== null && typeof data === 'object' && 'message' in data
        ? String((data as { message: unknown }).message)
        : typeof data === 'string' && data
          ? data
          : response.statusText;
    const retryAfter = retryAfterSeconds(response.headers.get('Retry-After'));
    if (
      (response.status === 503 && retryAfter !== null) ||
      response.status === 502 ||
      response.status === 504
    ) {
      throw new ServiceUnavailableError(message, retryAfter);
    }
    throw new ServerConnection.ResponseError(response, message);
  }

  return data as T;
}

/** The query string for `params`, leaving out empty values. */
export function query(params: Record<string, string | number | null | undefined>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === '') {
      continue;
    }
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}
