// Test hooks: `window.camfleetViewer` for the browser tests and benchmarks, and the probe that
// reads the synthetic test pattern's frame code from each displayed picture.
//
// Not part of the product page: esbuild puts this module in a chunk of its own, which the page
// loads only when its URL asks for it (`?testhooks`; `?probe` also records a per-frame trace).

import type { CameraView, DrawnBox, FrameObservation } from './camera';
import type { Viewer } from './main';

const TRACE_LIMIT = 2000;
const EVENT_IDS_LIMIT = 20000;

import type { PlayedFrame } from './playback';

export interface TraceEntry {
  frameId: number | null;
  tsMs: number | null;
  code: number | null;
  eventFrame: number | null;
  eventId: string | null;
  kind: string;
  boxes: DrawnBox[];
}

/** Per-camera test state, attached to each view as it appears. */
class Probe {
  probing: boolean;
  trace: TraceEntry[] = [];
  eventIds: string[] = [];
  private canvas: HTMLCanvasElement | null = null;

  constructor(
    readonly view: CameraView,
    probing: boolean,
  ) {
    this.probing = probing;
    view.frameObserver = (frame) => {
      if (this.probing) this.record(frame);
    };
    view.eventObserver = (id) => {
      this.eventIds.push(id);
      if (this.eventIds.length > EVENT_IDS_LIMIT) this.eventIds.splice(0, EVENT_IDS_LIMIT / 2);
    };
  }

  private record({ frameId, tsMs, match, boxes }: FrameObservation): void {
    this.trace.push({
      frameId,
      tsMs,
      code: this.readCode(),
      eventFrame: match?.entry.event.frame ?? null,
      eventId: match?.entry.id ?? null,
      kind: match?.kind ?? 'none',
      boxes,
    });
    if (this.trace.length > TRACE_LIMIT) this.trace.shift();
  }

  /** The test pattern's frame code: 16 black/white blocks in the top 1/27 of the picture. */
  private readCode(): number | null {
    const video = this.view.video;
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (!vw || !vh) return null;
    if (!this.canvas) {
      this.canvas = document.createElement('canvas');
      this.canvas.width = 256;
      this.canvas.height = 8;
    }
    const ctx = this.canvas.getContext('2d', { willReadFrequently: true });
    if (!ctx) return null;
    const row = Math.max(8, Math.round(vh / 27));
    ctx.drawImage(video, 0, row / 4, Math.floor(vw / 16) * 16, row / 2, 0, 0, 256, 8);
    const px = ctx.getImageData(0, 0, 256, 8).data;
    let value = 0;
    for (let bit = 0; bit < 16; bit++) {
      let sum = 0;
      let n = 0;
      for (let x = bit * 16 + 4; x < bit * 16 + 12; x++) {
        for (let y = 2; y < 6; y++) {
          const i = (y * 256 + x) * 4;
          sum += (px[i]! + px[i + 1]! + px[i + 2]!) / 3;
          n++;
        }
      }
      value = (value << 1) | (sum / n > 127 ? 1 : 0);
    }
    return value;
  }
}

function stats(view: CameraView): Record<string, unknown> {
  const receiver = view.track?.receiver;
  return {
    camera: view.info.camera,
    phase: view.phase,
    connection: view.connection,
    error: view.error,
    joins: view.joins,
    syncMode: view.syncMode,
    videoWidth: view.video.videoWidth,
    videoHeight: view.video.videoHeight,
    framesDisplayed: view.framesDisplayed,
    framesWithMetadata: view.framesWithMetadata,
    lastFrameId: view.lastFrameId,
    lastTsMs: view.lastTsMs,
    lastRtpTimestamp: view.lastRtpTimestamp,
    eventsReceived: view.eventsReceived,
    lastEventId: view.lastEventId,
    lastDrawn: view.lastDrawn,
    drift: view.drift.snapshot(),
    holdBackMs: view.holdBack.targetMs,
    jitterBufferTarget: receiver && 'jitterBufferTarget' in receiver ? receiver.jitterBufferTarget : null,
    lateEvents: view.lateEvents,
    holdBackLowMarginMs: view.holdBack.lastLowMs,
    videoLatencyMs: view.videoLatencyMs,
    eventLatencyMs: view.eventLatencyMs,
    decoder: view.track?.getDecoderImplementation() ?? null,
    still: {
      loads: view.still.loads,
      shown: !view.still.img.hidden,
      takenAt: view.still.takenAt,
      live: view.still.live,
      age: view.still.ageEl.hidden ? null : view.still.ageEl.textContent,
      firstShownAt: view.still.firstShownAt,
    },
    firstFrameAt: view.firstFrameAt,
    sound: {
      track: view.sound.track !== null,
      button: !view.sound.button.hidden,
      label: view.sound.button.textContent,
      muted: view.sound.audio.muted,
    },
  };
}

function hooks(viewer: Viewer, probing: boolean) {
  const probes = new Map<CameraView, Probe>();
  const attach = (view: CameraView): void => {
    if (!probes.has(view)) probes.set(view, new Probe(view, probing));
  };
  viewer.views.forEach(attach);
  viewer.onView = attach;
  const view = (camera: string): CameraView => {
    const v = viewer.views.get(camera);
    if (!v) throw new Error(`no camera ${camera} on the page`);
    return v;
  };
  const probe = (camera: string): Probe => {
    const v = view(camera);
    attach(v);
    return probes.get(v)!;
  };
  return {
    cameras: () => viewer.listed,
    signedIn: () => viewer.signedIn,
    stats: (camera: string) => {
      const v = viewer.views.get(camera);
      return v ? stats(v) : null;
    },
    eventIds: (camera: string) => [...probe(camera).eventIds],
    trace: (camera: string) => [...probe(camera).trace],
    probe: (camera: string, on: boolean) => {
      const p = probe(camera);
      p.probing = on;
      p.trace = [];
    },
    freeze: (camera: string, frozen: boolean) => view(camera).freeze(frozen),
    drawFor: (camera: string, frameId: number) => view(camera).drawFor(frameId),
    resetDrift: (camera: string) => view(camera).drift.reset(),
    enlarge: (camera: string | null) => viewer.enlarge(camera === null ? null : view(camera)),
    socket: () => ({
      ...viewer.socketInfo,
      connects: viewer.socket?.connects ?? 0,
      duplicates: viewer.socket?.duplicates ?? 0,
    }),
    dropSocket: () => viewer.socket?.drop(),
    /** Playback (playback.ts): play from an instant (epoch ms), its stats, back to live. */
    playAt: (camera: string, ms: number) => void viewer.playbacks.get(camera)?.playAt(ms),
    playback: (camera: string) => viewer.playbacks.get(camera)?.stats ?? null,
    live: (camera: string) => viewer.playbacks.get(camera)?.live(),
    observePlayback: (camera: string, fn: ((frame: PlayedFrame, video: HTMLVideoElement) => void) | null) => {
      const p = viewer.playbacks.get(camera);
      if (p) p.frameObserver = fn;
    },
    /** The tile's audio receiver: inbound-rtp stats (packets received, samples played out). */
    audioStats: async (camera: string) => {
      const receiver = view(camera).sound.track?.receiver;
      if (!receiver) return null;
      let inbound: Record<string, unknown> | null = null;
      (await receiver.getStats()).forEach((r: Record<string, unknown>) => {
        if (r.type === 'inbound-rtp') inbound = r;
      });
      return inbound;
    },
  };
}

declare global {
  interface Window {
    camfleetViewer?: ReturnType<typeof hooks>;
  }
}

export function install(viewer: Viewer, probing: boolean): void {
  window.camfleetViewer = hooks(viewer, probing);
}
