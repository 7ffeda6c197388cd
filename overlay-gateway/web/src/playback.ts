// Playback of a camera's recording, with the AI boxes on the frame they belong to.
//
// The gateway names the segments (`/recordings`, signed URLs, docs/recording.md); the bytes come
// from the store straight into Media Source Extensions: each segment is a self-contained
// fragmented MP4 whose media time *is* the capture stamp (µs since the epoch), so seeking to an
// instant is `currentTime = ms / 1000` and `requestVideoFrameCallback`'s `mediaTime` is the
// displayed frame's capture stamp, matched to the stored events' `ts` exactly as live matches
// by stamp. Hooks for the page: `playAt(ms)`, `live()`, `onModeChange`.

import { eventsBetween, recordings, type RecordedSegment, type StoredEvent } from './api';
import { boxToRect, containRect, labelColour } from './overlay';

/** How far ahead of the instant one play request reaches (segments and events). */
const AHEAD_MS = 60_000;
const BEHIND_MS = 10_000;

/** One played frame, for the test hooks and the seek measurement. */
export interface PlayedFrame {
  /** The frame's media time = capture stamp (µs). */
  us: number;
  /** `ts` (ms) of the event whose boxes were drawn on it, or null. */
  eventTs: number | null;
  /** The boxes drawn, normalised [x, y, w, h]. */
  boxes: [number, number, number, number][];
}

export interface PlaybackStats {
  target: number | null;
  requestedAt: number | null;
  firstFrameAt: number | null;
  /** Click to first displayed frame (ms): the seek-to-first-frame figure. */
  seekToFirstFrameMs: number | null;
  firstFrameUs: number | null;
  frames: PlayedFrame[];
  error: string | null;
}

/** `avc1.PPCCLL` from the first `avcC` box of an MP4 (profile, constraints, level). */
export function avcCodec(bytes: Uint8Array): string | null {
  for (let i = 4; i + 8 < bytes.length; i++) {
    if (bytes[i] === 0x61 && bytes[i + 1] === 0x76 && bytes[i + 2] === 0x63 && bytes[i + 3] === 0x43) {
      const hex = (n: number | undefined): string => (n ?? 0).toString(16).padStart(2, '0');
      return `avc1.${hex(bytes[i + 5])}${hex(bytes[i + 6])}${hex(bytes[i + 7])}`;
    }
  }
  return null;
}

/**
 * Presentation times (in the track's timescale, µs here) of every sample of a fragmented MP4,
 * in file order: `tfdt` + the `trun` durations (+ composition offsets). The i-th sample of a
 * segment is frame `firstFrame + i` of the ingest, the id live events carry in `frame`.
 */
export function sampleTimes(bytes: Uint8Array): number[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  const type = (at: number): string => String.fromCharCode(...bytes.subarray(at + 4, at + 8));
  const walk = (start: number, end: number, traf: { base: number; duration: number }): void => {
    let at = start;
    while (at + 8 <= end) {
      const size = view.getUint32(at);
      if (size < 8) return;
      const kind = type(at);
      if (kind === 'moof' || kind === 'traf') {
        walk(at + 8, at + size, kind === 'traf' ? { base: 0, duration: 0 } : traf);
      } else if (kind === 'tfhd') {
        const flags = view.getUint32(at + 8) & 0xffffff;
        let p = at + 16; // version/flags, track id
        if (flags & 0x1) p += 8;
        if (flags & 0x2) p += 4;
        if (flags & 0x8) traf.duration = view.getUint32(p);
      } else if (kind === 'tfdt') {
        const v1 = bytes[at + 8] === 1;
        traf.base = v1 ? Number(view.getBigUint64(at + 12)) : view.getUint32(at + 12);
      } else if (kind === 'trun') {
        const flags = view.getUint32(at + 8) & 0xffffff;
        const v1 = bytes[at + 8] === 1;
        const count = view.getUint32(at + 12);
        let p = at + 16;
        if (flags & 0x1) p += 4;
        if (flags & 0x4) p += 4;
        let t = traf.base;
        for (let i = 0; i < count; i++) {
          let duration = traf.duration;
          let offset = 0;
          if (flags & 0x100) { duration = view.getUint32(p); p += 4; }
          if (flags & 0x200) p += 4;
          if (flags & 0x400) p += 4;
          if (flags & 0x800) { offset = v1 ? view.getInt32(p) : view.getUint32(p); p += 4; }
          out.push(t + offset);
          t += duration;
        }
        traf.base = t;
      }
      at += size;
    }
  };
  walk(0, bytes.length, { base: 0, duration: 0 });
  return out;
}

/** The segments to play from `ms`: the one holding that instant and the ones after it. */
export function segmentsFrom(segments: RecordedSegment[], ms: number): RecordedSegment[] {
  const us = ms * 1000;
  return segments.filter((s) => s.end > us).sort((a, b) => a.start - b.start);
}

function waitEvent(target: EventTarget, name: string): Promise<void> {
  return new Promise((resolve) => target.addEventListener(name, () => resolve(), { once: true }));
}

async function append(buffer: SourceBuffer, data: Uint8Array): Promise<void> {
  const done = waitEvent(buffer, 'updateend');
  buffer.appendBuffer(data as BufferSource);
  await done;
}

export class Playback {
  readonly video: HTMLVideoElement;
  readonly canvas: HTMLCanvasElement;
  readonly liveButton: HTMLButtonElement;
  playing = false;
  stats: PlaybackStats = Playback.emptyStats();
  onModeChange: ((playing: boolean) => void) | null = null;
  /** Told about every played frame, on its frame callback (the test hooks read its pixels). */
  frameObserver: ((frame: PlayedFrame, video: HTMLVideoElement) => void) | null = null;
  private byTs = new Map<number, StoredEvent>();
  private byFrame = new Map<number, StoredEvent>();
  /** Frame id of each played sample, by its stamp (µs). */
  private frameIds = new Map<number, number>();
  private generation = 0;
  private objectUrl: string | null = null;

  private static emptyStats(): PlaybackStats {
    return { target: null, requestedAt: null, firstFrameAt: null, seekToFirstFrameMs: null, firstFrameUs: null, frames: [], error: null };
  }

  constructor(
    readonly camera: string,
    private readonly stage: HTMLElement,
  ) {
    this.video = document.createElement('video');
    this.video.className = 'playback';
    this.video.muted = true;
    this.video.playsInline = true;
    this.video.hidden = true;
    this.video.setAttribute('aria-label', `Recording of ${camera}`);
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'playback';
    this.canvas.hidden = true;
    this.canvas.setAttribute('aria-hidden', 'true');
    this.liveButton = document.createElement('button');
    this.liveButton.type = 'button';
    this.liveButton.className = 'go-live';
    this.liveButton.textContent = 'Live';
    this.liveButton.hidden = true;
    this.liveButton.addEventListener('click', (ev) => {
      ev.stopPropagation();
      this.live();
    });
    stage.append(this.video, this.canvas, this.liveButton);
  }

  /** Play the recording from `ms` (capture time, epoch ms), boxes from the event history. */
  async playAt(ms: number): Promise<void> {
    const generation = ++this.generation;
    this.stats = { ...Playback.emptyStats(), target: ms, requestedAt: performance.now() };
    try {
      const rec = await recordings(this.camera, ms - BEHIND_MS, ms + AHEAD_MS);
      const segments = segmentsFrom(rec.segments, ms);
      const first = segments[0];
      if (!first || first.start > ms * 1000 + 1000_000) throw new Error('nothing recorded at that instant');
      if (generation !== this.generation) return;
      // Only now away from live: with nothing recorded there, live stays on.
      this.setPlaying(true);
      const last = segments[segments.length - 1]!;
      const events = eventsBetween(this.camera, Math.floor(first.start / 1000), Math.ceil(last.end / 1000) + 1);
      const source = new MediaSource();
      this.resetVideo();
      this.objectUrl = URL.createObjectURL(source);
      this.video.src = this.objectUrl;
      await waitEvent(source, 'sourceopen');
      this.frameIds.clear();
      const bytes = await this.fetchSegment(first);
      const codec = avcCodec(bytes);
      if (!codec) throw new Error('no H.264 configuration in the segment');
      const buffer = source.addSourceBuffer(`video/mp4; codecs="${codec}"`);
      await append(buffer, bytes);
      const stored = await events;
      this.byTs = new Map(stored.map((e) => [e.ts, e]));
      this.byFrame = new Map(stored.filter((e) => typeof e.frame === 'number').map((e) => [e.frame as number, e]));
      if (generation !== this.generation) return;
      this.watchFrames(generation);
      // A stamp's ms is its µs floored: +1 ms lands inside the frame stamped at `ms`.
      // Paused until that frame is on screen (the first frame callback plays on): the first
      // picture is the chosen instant's, never one the decoder raced past.
      this.video.currentTime = (ms + 1) / 1000;
      for (const segment of segments.slice(1)) {
        const data = await this.fetchSegment(segment);
        if (generation !== this.generation) return;
        await append(buffer, data);
      }
      if (source.readyState === 'open') source.endOfStream();
    } catch (err) {
      if (generation === this.generation) {
        this.stats.error = err instanceof Error ? err.message : String(err);
        this.liveButton.title = `Playback failed: ${this.stats.error}`;
      }
    }
  }

  /** Back to live video. */
  live(): void {
    this.generation++;
    this.resetVideo();
    this.setPlaying(false);
  }

  private async fetchSegment(segment: RecordedSegment): Promise<Uint8Array> {
    // Straight from the store (another origin): the signature is the authorisation.
    const response = await fetch(segment.url, { mode: 'cors', credentials: 'omit' });
    if (!response.ok) throw new Error(`store answered ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    sampleTimes(bytes).forEach((us, i) => this.frameIds.set(us, segment.firstFrame + i));
    return bytes;
  }

  /**
   * The event stamped for the frame shown at `us`: by frame id when events carry one (stamps
   * of frames read in a burst can share a millisecond), else by the millisecond of the stamp.
   */
  eventFor(us: number): StoredEvent | null {
    const id = this.frameIds.get(us);
    if (id !== undefined) {
      const byFrame = this.byFrame.get(id);
      if (byFrame) return byFrame;
      if (this.byFrame.size) return null;
    }
    return this.byTs.get(Math.floor(us / 1000)) ?? null;
  }

  private resetVideo(): void {
    this.video.pause();
    this.video.removeAttribute('src');
    this.video.load();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.canvas.getContext('2d')?.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  private setPlaying(playing: boolean): void {
    this.playing = playing;
    this.video.hidden = this.canvas.hidden = this.liveButton.hidden = !playing;
    this.stage.classList.toggle('playback-mode', playing);
    this.onModeChange?.(playing);
  }

  private watchFrames(generation: number): void {
    const step = (_now: number, md: VideoFrameCallbackMetadata): void => {
      if (generation !== this.generation) return;
      const us = Math.round(md.mediaTime * 1e6);
      const target = this.stats.target;
      // The first frame of the requested instant (not a frame shown before the seek landed).
      if (this.stats.firstFrameAt === null && target !== null && us + 40_000 >= target * 1000) {
        this.stats.firstFrameAt = performance.now();
        this.stats.firstFrameUs = us;
        this.stats.seekToFirstFrameMs = this.stats.firstFrameAt - (this.stats.requestedAt ?? 0);
      }
      const event = this.eventFor(us);
      const boxes = this.draw(event);
      if (this.stats.firstFrameAt !== null) {
        const played = { us, eventTs: event?.ts ?? null, boxes };
        this.stats.frames.push(played);
        this.frameObserver?.(played, this.video);
        if (this.video.paused) void this.video.play().catch(() => undefined);
      }
      this.video.requestVideoFrameCallback(step);
    };
    this.video.requestVideoFrameCallback(step);
  }

  private draw(event: StoredEvent | null): [number, number, number, number][] {
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
    if (!event) return [];
    const rect = containRect(cssW, cssH, this.video.videoWidth, this.video.videoHeight);
    ctx.lineWidth = 2;
    const drawn: [number, number, number, number][] = [];
    for (const obj of event.objects) {
      const r = boxToRect(obj.box, rect);
      ctx.strokeStyle = labelColour(obj.label);
      ctx.strokeRect(r.x, r.y, r.width, r.height);
      drawn.push(obj.box);
    }
    return drawn;
  }
}
