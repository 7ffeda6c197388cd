// The viewer page: sign-in (when the gateway asks for it), the grid of cameras the viewer may
// see, enlarge on click/Enter, one gateway socket for all overlays. Test hooks are a separate
// chunk (testhooks.ts), loaded only when the URL asks for them.

import { adoptTokenFromUrl, ApiError, AuthRequired, listCameras, storedToken, storeToken, type CameraInfo } from './api';
import { CameraView, type ViewerOptions } from './camera';
import { HistoryPanel } from './history';
import { Playback } from './playback';
import { GatewaySocket, type SocketState } from './socket';

const REFRESH_MS = 10000;

interface SocketInfo {
  state: SocketState;
  connects: number;
  duplicates: number;
  gaps: Record<string, boolean>;
  errors: { code: string; message: string; camera?: string }[];
}

export class Viewer {
  readonly views = new Map<string, CameraView>();
  readonly histories = new Map<string, HistoryPanel>();
  readonly playbacks = new Map<string, Playback>();
  socket: GatewaySocket | null = null;
  /** Called with each camera view as it is created (the test hooks attach to it). */
  onView: ((view: CameraView) => void) | null = null;
  private readonly grid = document.getElementById('grid') as HTMLElement;
  private readonly signin = document.getElementById('signin') as HTMLFormElement;
  private readonly statusEl = document.getElementById('status') as HTMLElement;
  private readonly socketEl = document.getElementById('socket') as HTMLElement;
  private readonly signoutBtn = document.getElementById('signout') as HTMLButtonElement;
  private enlarged: CameraView | null = null;
  private refreshTimer: number | undefined;
  readonly socketInfo: SocketInfo = { state: 'closed', connects: 0, duplicates: 0, gaps: {}, errors: [] };
  listed: string[] | null = null;
  signedIn = false;
  readonly options: ViewerOptions;

  constructor() {
    const params = new URLSearchParams(location.search);
    this.options = {
      workerUrl: new URL('static/fm-worker.js', document.baseURI).href,
      holdBackFloorMs: Number(params.get('holdback') ?? 0) || 0,
      assumedVideoLatencyMs: Number(params.get('latency') ?? 150) || 150,
      forceTimeSync: params.get('sync') === 'time',
    };
    this.signin.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = this.signin.querySelector('input') as HTMLInputElement;
      storeToken(input.value.trim() || null);
      input.value = '';
      void this.load();
    });
    this.signoutBtn.addEventListener('click', () => {
      storeToken(null);
      location.reload();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && this.enlarged) this.enlarge(null);
    });
  }

  async load(): Promise<void> {
    try {
      const cameras = await listCameras();
      this.signedIn = true;
      this.signin.hidden = true;
      this.signoutBtn.hidden = storedToken() === null;
      this.grid.hidden = false;
      this.sync(cameras);
      this.setStatus(cameras.length ? '' : 'No cameras you may view.');
      window.clearTimeout(this.refreshTimer);
      this.refreshTimer = window.setTimeout(() => void this.load(), REFRESH_MS);
    } catch (err) {
      if (err instanceof AuthRequired) {
        this.signedIn = false;
        const hadToken = storedToken() !== null;
        storeToken(null);
        this.signin.hidden = false;
        this.grid.hidden = true;
        this.signoutBtn.hidden = true;
        this.setStatus(hadToken ? 'That token was not accepted.' : 'Sign in to view cameras.');
        (this.signin.querySelector('input') as HTMLInputElement).focus();
        return;
      }
      this.setStatus(err instanceof ApiError ? `Gateway: ${err.message}` : 'Gateway unreachable, retrying…');
      window.clearTimeout(this.refreshTimer);
      this.refreshTimer = window.setTimeout(() => void this.load(), 3000);
    }
  }

  private setStatus(text: string): void {
    this.statusEl.textContent = text;
    this.statusEl.hidden = !text;
  }

  private sync(cameras: CameraInfo[]): void {
    this.listed = cameras.map((c) => c.camera);
    const wanted = new Set(this.listed);
    for (const [camera, view] of this.views) {
      if (!wanted.has(camera)) {
        void view.stop();
        view.element.remove();
        this.views.delete(camera);
        this.histories.delete(camera);
      }
    }
    for (const info of cameras) {
      const existing = this.views.get(info.camera);
      if (existing) {
        existing.setPhase(info.phase);
        this.histories.get(info.camera)?.setHealth(info.overlays);
        continue;
      }
      const view = new CameraView(info, this.options);
      this.onView?.(view);
      view.element.addEventListener('click', () => this.enlarge(this.enlarged === view ? null : view));
      view.element.addEventListener('keydown', (ev) => {
        if (ev.key === 'Enter' || ev.key === ' ') {
          ev.preventDefault();
          this.enlarge(this.enlarged === view ? null : view);
        }
      });
      this.views.set(info.camera, view);
      const history = new HistoryPanel(info.camera);
      view.element.querySelector('header')!.append(history.badge);
      view.element.append(history.element);
      history.setHealth(info.overlays);
      this.histories.set(info.camera, history);
      const playback = new Playback(info.camera, view.element.querySelector('.stage')!);
      history.onPick = (ms) => void playback.playAt(ms);
      this.playbacks.set(info.camera, playback);
      this.grid.append(view.element);
      view.start();
      history.start();
    }
    this.grid.dataset.count = String(this.views.size);
    this.ensureSocket().setCameras([...this.views.keys()]);
  }

  private ensureSocket(): GatewaySocket {
    if (this.socket) return this.socket;
    const url = new URL('ws', document.baseURI);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const info = this.socketInfo;
    this.socket = new GatewaySocket(url.href, {
      event: (camera, id, event) => this.views.get(camera)?.onEvent(id, event),
      subscribed: (camera, _replayed, gap) => {
        info.gaps[camera] = info.gaps[camera] || gap;
      },
      status: () => undefined,
      error: (code, message, camera) => {
        info.errors.push({ code, message, camera });
        if (info.errors.length > 50) info.errors.shift();
      },
      state: (state) => {
        info.state = state;
        this.socketEl.textContent = `overlays: ${state}`;
        this.socketEl.dataset.state = state;
      },
    });
    this.socket.start();
    return this.socket;
  }

  enlarge(view: CameraView | null): void {
    for (const v of this.views.values()) {
      const on = v === view;
      v.element.classList.toggle('enlarged', on);
      v.element.setAttribute('aria-pressed', String(on));
    }
    this.grid.classList.toggle('has-enlarged', view !== null);
    this.enlarged = view;
    view?.element.focus();
  }
}

adoptTokenFromUrl();
const viewer = new Viewer();
const params = new URLSearchParams(location.search);
if (params.has('testhooks') || params.has('probe')) {
  // Before load(), so that hooks see every camera view from the first.
  void import('./testhooks').then((hooks) => {
    hooks.install(viewer, params.has('probe'));
    void viewer.load();
  });
} else {
  void viewer.load();
}
