// The admin API from the browser: every call carries the bearer token, which lives in this
// tab's sessionStorage only (never in a URL, never in localStorage or a cookie).

const KEY = 'callgate.admin-token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** An answer other than 2xx: the gateway's `{"error": {code, message}}`, or a network failure. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the admin API; `query` values that are empty are left out. A 401 signs out. */
export async function api(method, path, query = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, String(value));
  }
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: { Authorization: `Bearer ${token() ?? ''}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
  } catch (e) {
    throw new ApiError(0, 'network', `The gateway did not answer (${e.message}).`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : {};
    if (response.status === 401) window.dispatchEvent(new CustomEvent('callgate:unauthorized'));
    throw new ApiError(response.status, error.code ?? `http_${response.status}`, error.message ?? `HTTP ${response.status}`);
  }
  return body;
}

export const get = (path, query) => api('GET', path, query);
export const post = (path, query) => api('POST', path, query);

/** The canonical event types, read from the API's own document (the test send's `type`). */
let types = null;
export async function eventTypes() {
  if (types) return types;
  const doc = await get('/v1/admin/openapi.json');
  const op = doc?.paths?.['/v1/admin/routes/{name}/test']?.post;
  const param = (op?.parameters ?? []).find((p) => p.name === 'type');
  types = param?.schema?.enum ?? [];
  return types;
}

/** Path segment: every character that is not plain is escaped (`:` of a subject too). */
export const seg = (text) => encodeURIComponent(text);
