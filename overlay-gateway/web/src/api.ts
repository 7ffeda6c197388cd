// The gateway's HTTP API and the viewer's credentials.
//
// The page does not need to know the gateway's auth mode: it asks for the camera list as it is;
// behind an auth proxy that already works (the proxy adds the identity headers), otherwise the
// gateway answers 401 and the page asks for a token (a Kubernetes bearer token, or the static
// token in local use), kept in sessionStorage only: it dies with the tab.

const TOKEN_KEY = 'camfleet.token';

export interface CameraInfo {
  camera: string; // "<namespace>/<name>"
  namespace: string;
  name: string;
  phase: string | null;
  room: string;
  /** AI path health: is an AI worker's output arriving for this camera? */
  overlays?: OverlayHealth;
}

export interface OverlayHealth {
  state: 'fresh' | 'stale' | 'none' | 'unknown';
  lastEventAt?: number; // ms since the epoch
  staleSince?: number;
}

export interface StoredObject {
  id: string;
  label: string;
  score: number;
  box: [number, number, number, number];
}

export interface StoredEvent {
  id: string;
  ts: number;
  frame?: number;
  source: string;
  objects: StoredObject[];
}

export interface Timeline {
  from: number;
  to: number;
  bucketSeconds: number;
  buckets: { start: number; counts: Record<string, number> }[];
  totals: Record<string, number>;
}

export interface ViewerToken {
  token: string;
  url: string;
  room: string;
  identity: string;
  expiresAt: number;
}

export class AuthRequired extends Error {}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * `camfleet up` prints the viewer URL with the local token in its fragment (`#token=…`): the
 * fragment never reaches a server or a log. Take it into sessionStorage and drop it from the
 * address bar so that it is not bookmarked or shared by accident.
 */
export function adoptTokenFromUrl(): void {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const token = params.get('token');
  if (!token) return;
  storeToken(token);
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
}

export function storedToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function storeToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lives as long as the page
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const token = storedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function call<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await fetch(path, {
    ...init,
    headers: headers((init.headers as Record<string, string>) ?? {}),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (response.status === 401) throw new AuthRequired('sign-in required');
  const body = (await response.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
  if (!response.ok) {
    throw new ApiError(response.status, body.error?.code ?? 'error', body.error?.message ?? response.statusText);
  }
  return body as T;
}

export async function listCameras(): Promise<CameraInfo[]> {
  const body = await call<{ cameras: CameraInfo[] }>('/api/cameras');
  return body.cameras;
}

function cameraPath(camera: string, what: string): string {
  const [ns = '', name = ''] = camera.split('/');
  return `/api/cameras/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/${what}`;
}

export async function timeline(camera: string, from: number, to: number): Promise<Timeline> {
  return call<Timeline>(`${cameraPath(camera, 'timeline')}?from=${from}&to=${to}`);
}

export async function recentEvents(camera: string, from: number, limit: number): Promise<StoredEvent[]> {
  const body = await call<{ events: StoredEvent[] }>(
    `${cameraPath(camera, 'events')}?from=${from}&order=desc&limit=${limit}`,
  );
  return body.events;
}

export async function viewerToken(camera: string): Promise<ViewerToken> {
  return call<ViewerToken>('/api/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ camera }),
  });
}

/** WebSocket subprotocols: the protocol version, plus the bearer token the way Kubernetes does it. */
export function socketProtocols(): string[] {
  const protocols = ['camfleet.v1'];
  const token = storedToken();
  if (token) {
    const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(token)))
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
      .replace(/=+$/, '');
    protocols.push(`base64url.bearer.authorization.k8s.io.${b64}`);
  }
  return protocols;
}

export interface Snapshot {
  blob: Blob;
  /** Capture time of the keyframe, ms since the epoch. */
  takenAt: number;
  /** From a running ingest (true) or the last known still (false). */
  live: boolean;
}

/** The camera's latest still (`GET …/snapshot.jpg`), null when there is none yet. */
export async function snapshot(camera: string): Promise<Snapshot | null> {
  const response = await fetch(cameraPath(camera, 'snapshot.jpg'), {
    headers: headers(),
    credentials: 'same-origin',
  });
  if (response.status === 401) throw new AuthRequired('sign-in required');
  if (response.status === 404) return null;
  if (!response.ok) throw new ApiError(response.status, 'error', response.statusText);
  return {
    blob: await response.blob(),
    takenAt: Number(response.headers.get('X-Camfleet-Taken-At') ?? 0),
    live: response.headers.get('X-Camfleet-Snapshot-Live') === 'true',
  };
}

// --- Playback (docs/recording.md) ------------------------------------------------------------

/** One recorded segment: capture times in µs since the epoch, a signed URL on the store. */
export interface RecordedSegment {
  start: number;
  end: number;
  firstFrame: number;
  frames: number;
  keyframes: number[];
  size: number;
  url: string;
}

export interface Recordings {
  camera: string;
  from: number;
  to: number;
  truncated: boolean;
  expires: number;
  segments: RecordedSegment[];
  gaps: { start: number; end: number; reason: string }[];
}

/** Segments and gaps between `from` and `to` (epoch ms). */
export async function recordings(camera: string, from: number, to: number): Promise<Recordings> {
  return call<Recordings>(`${cameraPath(camera, 'recordings')}?from=${from}&to=${to}`);
}

/** Stored events from `from` to `to` (epoch ms), oldest first, following cursors up to `max`. */
export async function eventsBetween(camera: string, from: number, to: number, max = 5000): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  let cursor: string | null = null;
  do {
    const page: { events: StoredEvent[]; next?: string | null } = await call(
      `${cameraPath(camera, 'events')}?from=${from}&to=${to}&order=asc&limit=1000` +
        (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''),
    );
    out.push(...page.events);
    cursor = page.next ?? null;
  } while (cursor && out.length < max);
  return out;
}
