// One camera tile: LiveKit video in a <video>, AI boxes on a <canvas> over it, drawn on the exact
// frame they belong to.
//
// Sync: at each displayed frame requestVideoFrameCallback gives the frame's RTP timestamp;
// livekit-client maps it to the frame metadata the ingest stamped (user_timestamp, frame_id);
// the event whose `frame` (or `ts`) equals that stamp is drawn. Without rtpTimestamp (Firefox)
// or without metadata on the track, it falls back to matching capture times against the clock
// and says so on the tile.

import {
  ConnectionState,
  RemoteAudioTrack,
  RemoteTrack,
  RemoteVideoTrack,
  Room,
  RoomEvent,
  Track,
  type RemoteParticipant,
  type RemoteTrackPublication,
} from 'livekit-client';

import { ApiError, viewerToken, type CameraInfo } from './api';
import {
  boxToRect,
  containRect,
  DriftStats,
  EventRing,
  HoldBack,
  labelColour,
  type BufferedEvent,
  type CamfleetEvent,
  type Match,
} from './overlay';
import { SoundControl } from './sound';
import { StillView } from './still';

const INGEST_PREFIX = 'ingest-';
/** Boxes older than this many frames behind the displayed one are stale: hidden. */
const MAX_BEHIND_FRAMES = 12;
const MAX_BEHIND_MS = 500;
const FRAME_MS_GUESS = 40;

export type SyncMode = 'frame' | 'time-no-rtp' | 'time-no-metadata' | 'time-forced' | 'none';

export interface DrawnBox {
  label: string;
  score: number;
  /** Viewport CSS pixels (what a screenshot of the page shows). */
  css: { x: number; y: number; width: number; height: number };
  /** Video pixels (the decoded frame's coordinates). */
  video: { x: number; y: number; width: number; height: number };
}

/** One displayed frame: its stamp and what was drawn on it. */
export interface FrameObservation {
  frameId: number | null;
  tsMs: number | null;
  match: Match | undefined;
  boxes: DrawnBox[];
}

export interface ViewerOptions {
  workerUrl: string;
  holdBackFloorMs: number;
  assumedVideoLatencyMs: number;
  /** `?sync=time`: match by capture time even where frame stamps exist (diagnostics, tests). */
  forceTimeSync: boolean;
}

export class CameraView {
  readonly element: HTMLElement;
  readonly video: HTMLVideoElement;
  readonly canvas: HTMLCanvasElement;
  private readonly stage: HTMLElement;
  private readonly phaseEl: HTMLElement;
  private readonly connEl: HTMLElement;
  private readonly syncEl: HTMLElement;
  private readonly driftEl: HTMLElement;
  /** The latest still, shown until the first video frame (snapshots). */
  readonly still: StillView;
  /** The camera's audio, muted until the viewer unmutes it. */
  readonly sound: SoundControl;

  private room: Room | null = null;
  private worker: Worker | null = null;
  /** The video track being shown (read by the test hooks' stats). */
  track: RemoteVideoTrack | null = null;
  private closed = false;
  private callbackHandle: number | null = null;
  private frozen = false;

  readonly ring = new EventRing();
  readonly drift = new DriftStats();
  readonly holdBack: HoldBack;
  phase: string | null;
  connection = 'disconnected';
  error: string | null = null;
  syncMode: SyncMode = 'none';
  framesDisplayed = 0;
  /** performance.now() of the first displayed frame. */
  firstFrameAt: number | null = null;
  framesWithMetadata = 0;
  lastFrameId: number | null = null;
  lastTsMs: number | null = null;
  lastRtpTimestamp: number | null = null;
  eventsReceived = 0;
  lastEventId: string | null = null;
  lateEvents = 0;
  lastDrawn: { eventFrame: number | null; eventId: string | null; kind: string; boxes: DrawnBox[] } | null = null;
  videoLatencyMs: number | null = null; // display time − capture time, last frame
  eventLatencyMs: number | null = null; // arrival time − capture time, last event
  joins = 0;
  /** Told about every displayed frame and every event: only the test hooks set these. */
  frameObserver: ((frame: FrameObservation) => void) | null = null;
  eventObserver: ((id: string, event: CamfleetEvent) => void) | null = null;
  private displayTimes = new Map<number, number>();
  private lastMatch: Match | undefined;

  constructor(
    readonly info: CameraInfo,
    private readonly options: ViewerOptions,
  ) {
    this.phase = info.phase;
    this.holdBack = new HoldBack(options.holdBackFloorMs);
    const el = document.createElement('article');
    el.className = 'tile';
    el.tabIndex = 0;
    el.dataset.camera = info.camera;
    el.setAttribute('role', 'button');
    el.setAttribute('aria-pressed', 'false');
    el.setAttribute('aria-label', `Camera ${info.camera}: press Enter to enlarge`);
    el.innerHTML = `
      <header>
        <h2 class="name"></h2>
        <span class="badge phase" title="Camera phase"></span>
        <span class="badge conn" title="Video connection"></span>
      </header>
      <div class="stage">
        <video muted playsinline autoplay disablepictureinpicture></video>
        <canvas aria-hidden="true"></canvas>
      </div>
      <footer>
        <span class="sync" role="status"></span>
        <span class="drift"></span>
      </footer>`;
    this.element = el;
    this.stage = el.querySelector('.stage')!;
    this.video = el.querySelector('video')!;
    this.canvas = el.querySelector('canvas')!;
    this.phaseEl = el.querySelector('.phase')!;
    this.connEl = el.querySelector('.conn')!;
    this.syncEl = el.querySelector('.sync')!;
    this.driftEl = el.querySelector('.drift')!;
    el.querySelector('.name')!.textContent = info.camera;
    this.video.setAttribute('aria-label', `Live video of ${info.camera}`);
    this.still = new StillView(info.camera, this.stage);
    this.sound = new SoundControl(info.camera, el.querySelector('header')!);
    this.setPhase(info.phase);
    this.setConnection('disconnected');
    new ResizeObserver(() => this.redraw()).observe(this.stage);
    this.video.addEventListener('resize', () => this.redraw());
  }

  start(): void {
    void this.joinLoop();
    this.still.start();
    window.setInterval(() => this.tick(), 1000);
  }

  async stop(): Promise<void> {
    this.closed = true;
    this.still.stop();
    await this.room?.disconnect();
    this.worker?.terminate();
  }

  setPhase(phase: string | null): void {
    this.phase = phase;
    this.phaseEl.textContent = phase ?? 'Unknown';
    this.phaseEl.dataset.phase = phase ?? 'Unknown';
  }

  private setConnection(state: string): void {
    this.connection = state;
    this.connEl.textContent = state;
    this.connEl.dataset.state = state;
  }

  // --- LiveKit ------------------------------------------------------------------------------

  private async joinLoop(): Promise<void> {
    let backoff = 1000;
    while (!this.closed) {
      try {
        const grant = await viewerToken(this.info.camera);
        this.error = null;
        await this.join(grant.url, grant.token);
        backoff = 1000;
      } catch (err) {
        if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
          this.error = err.message;
          this.setConnection(err.status === 403 ? 'forbidden' : 'not found');
          return;
        }
        this.error = err instanceof Error ? err.message : String(err);
        this.setConnection('retrying');
      }
      if (this.closed) return;
      await new Promise((r) => window.setTimeout(r, backoff * (0.75 + Math.random() * 0.5)));
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  /** Join the room and stay until the room is disconnected for good (the SDK resumes by itself). */
  private async join(url: string, token: string): Promise<void> {
    this.worker?.terminate();
    this.worker = new Worker(this.options.workerUrl);
    const room = new Room({
      adaptiveStream: true,
      dynacast: false,
      frameMetadata: { worker: this.worker },
    });
    this.room = room;
    const ended = new Promise<void>((resolve) => room.once(RoomEvent.Disconnected, () => resolve()));
    room
      .on(RoomEvent.ConnectionStateChanged, (state: ConnectionState) => this.setConnection(state))
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, _pub: RemoteTrackPublication, p: RemoteParticipant) =>
        this.onTrack(track, p),
      )
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => {
        if (track === this.track) this.dropTrack();
        if (track instanceof RemoteAudioTrack) this.sound.detach(track);
      });
    this.joins++;
    await room.connect(url, token, { autoSubscribe: true });
    this.setConnection(room.state);
    await ended;
    this.dropTrack();
    this.sound.detach();
    this.setConnection('disconnected');
  }

  private onTrack(track: RemoteTrack, participant: RemoteParticipant): void {
    if (!participant.identity.startsWith(INGEST_PREFIX)) return;
    if (track instanceof RemoteAudioTrack) {
      this.sound.attach(track);
      return;
    }
    if (track.kind !== Track.Kind.Video || !(track instanceof RemoteVideoTrack)) return;
    this.dropTrack();
    this.track = track;
    track.attach(this.video);
    this.holdBack.start(performance.now());
    this.applyHoldBack();
    void this.video.play().catch(() => undefined);
    this.scheduleFrame();
  }

  private dropTrack(): void {
    if (this.track) this.track.detach(this.video);
    this.track = null;
    this.still.show(true);
  }

  // --- frames -------------------------------------------------------------------------------

  private scheduleFrame(): void {
    if (this.callbackHandle !== null || this.frozen) return;
    if (!('requestVideoFrameCallback' in this.video)) {
      this.syncMode = 'time-no-rtp';
      this.rafLoop();
      return;
    }
    this.callbackHandle = this.video.requestVideoFrameCallback((now, md) => {
      this.callbackHandle = null;
      this.onFrame(now, md.rtpTimestamp);
      this.scheduleFrame();
    });
  }

  /** Browsers without requestVideoFrameCallback: redraw on animation frames, by the clock. */
  private rafLoop(): void {
    if (this.frozen) return;
    requestAnimationFrame((now) => {
      this.onFrame(now, undefined);
      this.rafLoop();
    });
  }

  private onFrame(now: number, rtpTimestamp: number | undefined): void {
    this.framesDisplayed++;
    if (this.firstFrameAt === null) this.firstFrameAt = now;
    if (this.still.visible && this.track) this.still.show(false);
    const wall = Date.now();
    let frameId: number | null = null;
    let tsMs: number | null = null;
    if (rtpTimestamp !== undefined && !this.options.forceTimeSync) {
      this.lastRtpTimestamp = rtpTimestamp;
      const meta = this.track?.lookupFrameMetadata({ rtpTimestamp });
      if (meta) {
        this.framesWithMetadata++;
        frameId = meta.frameId;
        tsMs = meta.userTimestamp > 0n ? Number(meta.userTimestamp / 1000n) : null;
      }
    }
    let match: Match | undefined;
    if (frameId !== null || tsMs !== null) {
      this.syncMode = 'frame';
      if (frameId !== null) {
        this.lastFrameId = frameId;
        this.displayTimes.set(frameId, now);
        if (this.displayTimes.size > 600) {
          const first = this.displayTimes.keys().next().value;
          if (first !== undefined) this.displayTimes.delete(first);
        }
      }
      this.lastTsMs = tsMs;
      if (tsMs !== null) this.videoLatencyMs = wall - tsMs;
      match = frameId !== null ? this.ring.matchFrame(frameId, MAX_BEHIND_FRAMES) : undefined;
      if (match === undefined && tsMs !== null) match = this.ring.matchTime(tsMs, 0, MAX_BEHIND_MS);
      this.drift.record(match === undefined ? undefined : match.kind === 'exact' ? 0 : this.behindFrames(match));
    } else {
      this.syncMode = this.options.forceTimeSync
        ? 'time-forced'
        : rtpTimestamp === undefined
          ? 'time-no-rtp'
          : 'time-no-metadata';
      // No stamp on the frame: assume a typical glass-to-glass delay and match by capture time.
      const estimate = wall - this.options.assumedVideoLatencyMs;
      match = this.ring.matchTime(estimate, FRAME_MS_GUESS / 2, MAX_BEHIND_MS);
    }
    if (match?.kind === 'exact' && frameId !== null && match.entry.event.frame === frameId) {
      this.holdBack.sample(now - match.entry.arrivedAt, now);
    }
    this.lastMatch = match;
    const boxes = this.draw(match);
    this.lastDrawn = match
      ? { eventFrame: match.entry.event.frame ?? null, eventId: match.entry.id, kind: match.kind, boxes }
      : null;
    this.frameObserver?.({ frameId, tsMs, match, boxes });
    if (this.framesDisplayed % 5 === 0) this.renderStatus();
  }

  private behindFrames(match: Match): number {
    return match.entry.event.frame != null ? match.behind : Math.round(match.behind / FRAME_MS_GUESS);
  }

  private redraw(): void {
    this.draw(this.lastMatch);
  }

  /** Draw `match`'s boxes (or clear); returns what was drawn, in CSS and video pixels. */
  private draw(match: Match | undefined): DrawnBox[] {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = this.stage.clientWidth;
    const cssH = this.stage.clientHeight;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext('2d');
    if (!ctx) return [];
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    const vw = this.video.videoWidth;
    const vh = this.video.videoHeight;
    if (!match || vw === 0) return [];
    const content = containRect(cssW, cssH, vw, vh);
    const stageBox = this.stage.getBoundingClientRect();
    const earlier = match.kind === 'earlier';
    const drawn: DrawnBox[] = [];
    ctx.font = '600 13px system-ui, sans-serif';
    ctx.textBaseline = 'bottom';
    for (const obj of match.entry.event.objects ?? []) {
      const r = boxToRect(obj.box, content);
      const colour = labelColour(obj.label);
      ctx.lineWidth = 2;
      ctx.strokeStyle = colour;
      ctx.setLineDash(earlier ? [6, 4] : []);
      ctx.strokeRect(r.x, r.y, r.width, r.height);
      const text = `${obj.label} ${Math.round(obj.score * 100)}%${earlier ? ` · ${this.behindFrames(match)} fr earlier` : ''}`;
      const tw = ctx.measureText(text).width + 8;
      const ty = r.y >= 18 ? r.y : r.y + r.height + 18;
      ctx.setLineDash([]);
      ctx.fillStyle = colour;
      ctx.fillRect(r.x - 1, ty - 18, tw, 18);
      ctx.fillStyle = '#000';
      ctx.fillText(text, r.x + 3, ty - 3);
      drawn.push({
        label: obj.label,
        score: obj.score,
        css: { x: stageBox.left + r.x, y: stageBox.top + r.y, width: r.width, height: r.height },
        video: { x: obj.box[0] * vw, y: obj.box[1] * vh, width: obj.box[2] * vw, height: obj.box[3] * vh },
      });
    }
    return drawn;
  }

  // --- events -------------------------------------------------------------------------------

  onEvent(id: string, event: CamfleetEvent): void {
    const now = performance.now();
    const entry: BufferedEvent = { id, event, arrivedAt: now };
    this.ring.add(entry);
    this.eventsReceived++;
    this.lastEventId = id;
    this.eventObserver?.(id, event);
    this.eventLatencyMs = Date.now() - event.ts;
    // Its frame is already on screen: the boxes came too late for it. Hold the video back.
    const frame = event.frame;
    if (frame != null && this.syncMode === 'frame') {
      const shownAt = this.displayTimes.get(frame);
      if (shownAt !== undefined && now - shownAt < 2000) {
        this.lateEvents++;
        this.holdBack.sample(shownAt - now, now);
      }
    }
  }

  private applyHoldBack(): void {
    const receiver = this.track?.receiver;
    if (receiver && 'jitterBufferTarget' in receiver) {
      const target = this.holdBack.targetMs;
      if (receiver.jitterBufferTarget !== target) receiver.jitterBufferTarget = target;
    }
  }

  private tick(): void {
    this.holdBack.update(performance.now());
    this.applyHoldBack();
    this.renderStatus();
  }

  private renderStatus(): void {
    const notes: Record<SyncMode, string> = {
      frame: 'Frame-accurate sync (frame metadata)',
      'time-no-rtp': 'Time-based sync: this browser exposes no rtpTimestamp, boxes are approximate',
      'time-no-metadata': 'Time-based sync: the stream carries no frame metadata, boxes are approximate',
      'time-forced': 'Time-based sync (forced by ?sync=time): boxes are approximate',
      none: this.error ? `Error: ${this.error}` : 'Waiting for video…',
    };
    this.syncEl.textContent = notes[this.syncMode];
    this.syncEl.dataset.mode = this.syncMode;
    const d = this.drift.snapshot();
    const share = d.exactShare === null ? '–' : `${(d.exactShare * 100).toFixed(1)}%`;
    const parts = [`exact ${share}`, `p95 ${d.p95 ?? '–'} fr`, `hold-back ${Math.round(this.holdBack.targetMs)} ms`];
    if (this.videoLatencyMs !== null) parts.push(`video ${Math.round(this.videoLatencyMs)} ms`);
    if (this.eventLatencyMs !== null) parts.push(`AI ${Math.round(this.eventLatencyMs)} ms`);
    this.driftEl.textContent = parts.join(' · ');
  }

  // --- for the test hooks (testhooks.ts, loaded only with ?testhooks) ---------------------

  /**
   * Stop on a frame (the canvas keeps its boxes) or play on. Pausing happens inside a frame
   * callback, right after that frame's boxes are drawn, so the picture and the boxes agree.
   */
  freeze(frozen: boolean): Promise<number | null> {
    if (!frozen) {
      this.frozen = false;
      void this.video.play().catch(() => undefined);
      this.scheduleFrame();
      return Promise.resolve(this.lastFrameId);
    }
    return new Promise((resolve) => {
      if (this.callbackHandle !== null) this.video.cancelVideoFrameCallback(this.callbackHandle);
      this.callbackHandle = this.video.requestVideoFrameCallback((now, md) => {
        this.callbackHandle = null;
        this.onFrame(now, md.rtpTimestamp);
        this.frozen = true;
        this.video.pause();
        resolve(this.lastFrameId);
      });
    });
  }

  /** Draw the boxes for frame `frameId` now; returns how it matched: 'exact', 'earlier' or 'none'. */
  drawFor(frameId: number): string {
    const match = this.ring.matchFrame(frameId, MAX_BEHIND_FRAMES);
    this.lastMatch = match;
    const boxes = this.draw(match);
    this.lastDrawn = match
      ? { eventFrame: match.entry.event.frame ?? null, eventId: match.entry.id, kind: match.kind, boxes }
      : null;
    return match?.kind ?? 'none';
  }
}
