// The gateway's /ws (protocol v1, docs/gateway.md): one socket for all cameras on the page, reconnects
// by itself and resubscribes with `since` = the last stream id seen per camera, so the gateway
// replays what was missed (inside Redis retention).

import { socketProtocols } from './api';
import { compareStreamIds, type CamfleetEvent } from './overlay';

export type SocketState = 'connecting' | 'open' | 'closed';

export interface SocketHandlers {
  event(camera: string, id: string, event: CamfleetEvent): void;
  subscribed(camera: string, replayed: number, gap: boolean, state: string): void;
  status(camera: string, state: string): void;
  error(code: string, message: string, camera?: string): void;
  state(state: SocketState): void;
}

type ServerMessage =
  | { type: 'hello'; v: number; user: string; heartbeat: number; limits?: { camerasPerMessage?: number } }
  | { type: 'event'; camera: string; id: string; event: CamfleetEvent }
  | { type: 'subscribed'; camera: string; replayed: number; gap: boolean; state: string }
  | { type: 'unsubscribed'; camera: string }
  | { type: 'status'; camera: string; state: string }
  | { type: 'error'; code: string; message: string; camera?: string }
  | { type: 'pong' };

export class GatewaySocket {
  private ws: WebSocket | null = null;
  private cameras = new Set<string>();
  private lastIds = new Map<string, string>();
  private retryMs = 500;
  /** The gateway refuses subscribe messages naming more cameras (hello.limits). */
  private camerasPerMessage = 64;
  private timer: number | undefined;
  private stopped = false;
  state: SocketState = 'closed';
  connects = 0;
  duplicates = 0;

  constructor(
    private readonly url: string,
    private readonly handlers: SocketHandlers,
  ) {}

  start(): void {
    this.stopped = false;
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    this.ws?.close(1000, 'page closed');
    this.ws = null;
  }

  /** Test hook: drop the connection now (it reconnects as after any network cut). */
  drop(): void {
    this.ws?.close(4000, 'dropped');
  }

  lastId(camera: string): string | undefined {
    return this.lastIds.get(camera);
  }

  setCameras(cameras: string[]): void {
    const wanted = new Set(cameras);
    const added = cameras.filter((c) => !this.cameras.has(c));
    const removed = [...this.cameras].filter((c) => !wanted.has(c));
    this.cameras = wanted;
    if (this.ws?.readyState === WebSocket.OPEN) {
      if (removed.length) this.send({ type: 'unsubscribe', cameras: removed });
      if (added.length) this.subscribe(added);
    }
  }

  private open(): void {
    this.setState('connecting');
    const ws = new WebSocket(this.url, socketProtocols());
    this.ws = ws;
    ws.onopen = () => {
      this.connects++;
      this.retryMs = 500;
      this.setState('open');
    };
    ws.onmessage = (ev) => this.receive(ev.data as string);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.setState('closed');
      if (this.stopped) return;
      // Backoff with jitter; capped so that a restored network is noticed quickly.
      const delay = this.retryMs * (0.75 + Math.random() * 0.5);
      this.retryMs = Math.min(this.retryMs * 2, 3000);
      this.timer = window.setTimeout(() => this.open(), delay);
    };
  }

  private subscribe(cameras: string[]): void {
    for (let i = 0; i < cameras.length; i += this.camerasPerMessage) {
      const chunk = cameras.slice(i, i + this.camerasPerMessage);
      const since: Record<string, string> = {};
      for (const c of chunk) {
        const id = this.lastIds.get(c);
        if (id) since[c] = id;
      }
      this.send({ type: 'subscribe', cameras: chunk, since });
    }
  }

  private send(message: object): void {
    this.ws?.send(JSON.stringify(message));
  }

  private setState(state: SocketState): void {
    this.state = state;
    this.handlers.state(state);
  }

  private receive(data: string): void {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data) as ServerMessage;
    } catch {
      return;
    }
    switch (msg.type) {
      case 'hello':
        // Subscribing waits for the hello: it says how many cameras a message may name.
        this.camerasPerMessage = Math.max(1, msg.limits?.camerasPerMessage ?? this.camerasPerMessage);
        if (this.cameras.size) this.subscribe([...this.cameras]);
        break;
      case 'event': {
        const last = this.lastIds.get(msg.camera);
        // Replay after a reconnect may overlap what arrived live: stream ids are ordered.
        if (last !== undefined && compareStreamIds(msg.id, last) <= 0) {
          this.duplicates++;
          return;
        }
        this.lastIds.set(msg.camera, msg.id);
        this.handlers.event(msg.camera, msg.id, msg.event);
        break;
      }
      case 'subscribed':
        this.handlers.subscribed(msg.camera, msg.replayed, msg.gap, msg.state);
        break;
      case 'status':
        this.handlers.status(msg.camera, msg.state);
        break;
      case 'error':
        this.handlers.error(msg.code, msg.message, msg.camera);
        break;
      default:
        break;
    }
  }
}
