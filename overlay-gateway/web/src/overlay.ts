// Pure overlay logic: no DOM, no network. The event ring buffer, matching a displayed frame to
// the event stamped for it, letterbox geometry, drift statistics and the hold-back controller.

import type { CamfleetEvent } from './events';

// The event contract's types, generated from docs/events.schema.json (gen-types.mjs).
export type { CamfleetEvent, DetectedObject } from './events';

export interface BufferedEvent {
  id: string; // Redis Stream id
  event: CamfleetEvent;
  arrivedAt: number; // performance.now() at arrival
}

/** A displayed frame's stamp, as read back from LiveKit frame metadata. */
export interface FrameStamp {
  frameId?: number;
  tsMs?: number;
}

export type MatchKind = 'exact' | 'earlier';

export interface Match {
  entry: BufferedEvent;
  kind: MatchKind;
  /** How many frames (frame mode) or ms (time mode) the event is older than the frame. */
  behind: number;
}

/**
 * Per-camera events ordered by their stamp: by `frame` when events carry one, else by `ts`.
 * Bounded: the oldest are dropped past `capacity` (a few seconds of events is plenty: a frame
 * is displayed within a second of its capture or not at all).
 */
export class EventRing {
  private byFrame: BufferedEvent[] = [];
  private byTs: BufferedEvent[] = [];

  constructor(readonly capacity = 512) {}

  get size(): number {
    return this.byTs.length;
  }

  add(entry: BufferedEvent): void {
    const frame = entry.event.frame;
    if (frame !== undefined && frame !== null) {
      insertSorted(this.byFrame, entry, (e) => e.event.frame as number);
      if (this.byFrame.length > this.capacity) this.byFrame.shift();
    }
    insertSorted(this.byTs, entry, (e) => e.event.ts);
    if (this.byTs.length > this.capacity) this.byTs.shift();
  }

  /** The event stamped for frame `frameId`, else the nearest earlier one within `maxBehind` frames. */
  matchFrame(frameId: number, maxBehind: number): Match | undefined {
    const i = lastAtOrBefore(this.byFrame, frameId, (e) => e.event.frame as number);
    if (i < 0) return undefined;
    const entry = this.byFrame[i]!;
    const behind = frameId - (entry.event.frame as number);
    if (behind > maxBehind) return undefined;
    return { entry, kind: behind === 0 ? 'exact' : 'earlier', behind };
  }

  /** The event captured at `tsMs` (±`toleranceMs`), else the nearest earlier within `maxBehindMs`. */
  matchTime(tsMs: number, toleranceMs: number, maxBehindMs: number): Match | undefined {
    const i = lastAtOrBefore(this.byTs, tsMs + toleranceMs, (e) => e.event.ts);
    if (i < 0) return undefined;
    const entry = this.byTs[i]!;
    const behind = Math.max(0, tsMs - entry.event.ts);
    if (behind > maxBehindMs) return undefined;
    return { entry, kind: behind <= toleranceMs ? 'exact' : 'earlier', behind };
  }

  /** The newest event by capture time. */
  latest(): BufferedEvent | undefined {
    return this.byTs[this.byTs.length - 1];
  }
}

function insertSorted<T>(list: T[], item: T, key: (t: T) => number): void {
  const k = key(item);
  let i = list.length;
  // Events arrive almost always in order: scan from the end.
  while (i > 0 && key(list[i - 1]!) > k) i--;
  list.splice(i, 0, item);
}

function lastAtOrBefore<T>(list: T[], value: number, key: (t: T) => number): number {
  let lo = 0;
  let hi = list.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (key(list[mid]!) <= value) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

/** Where a `object-fit: contain` video's picture lies inside its element (CSS pixels). */
export interface ContentRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export function containRect(
  elementWidth: number,
  elementHeight: number,
  videoWidth: number,
  videoHeight: number,
): ContentRect {
  if (videoWidth <= 0 || videoHeight <= 0 || elementWidth <= 0 || elementHeight <= 0) {
    return { x: 0, y: 0, width: 0, height: 0 };
  }
  const scale = Math.min(elementWidth / videoWidth, elementHeight / videoHeight);
  const width = videoWidth * scale;
  const height = videoHeight * scale;
  return { x: (elementWidth - width) / 2, y: (elementHeight - height) / 2, width, height };
}

/** A normalised box mapped into the content rect. */
export function boxToRect(box: [number, number, number, number], rect: ContentRect): ContentRect {
  const [x, y, w, h] = box;
  return {
    x: rect.x + x * rect.width,
    y: rect.y + y * rect.height,
    width: w * rect.width,
    height: h * rect.height,
  };
}

/** A stable, distinct colour per label (hue from a string hash). */
export function labelColour(label: string): string {
  let h = 2166136261;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  const hue = ((h >>> 0) % 360 + 360) % 360;
  return `hsl(${hue} 95% 55%)`;
}

/**
 * Drift per displayed frame: displayed frame stamp minus the stamp of the boxes drawn on it.
 * 0 = exact; `missing` counts frames with nothing to draw (no event at all within the window).
 */
export class DriftStats {
  frames = 0;
  exact = 0;
  earlier = 0;
  missing = 0;
  private window: number[] = [];

  constructor(readonly windowSize = 3000) {}

  record(behind: number | undefined): void {
    this.frames++;
    if (behind === undefined) {
      this.missing++;
      return;
    }
    if (behind === 0) this.exact++;
    else this.earlier++;
    this.window.push(behind);
    if (this.window.length > this.windowSize) this.window.shift();
  }

  percentile(p: number): number | undefined {
    if (this.window.length === 0) return undefined;
    const sorted = [...this.window].sort((a, b) => a - b);
    const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[idx];
  }

  reset(): void {
    this.frames = this.exact = this.earlier = this.missing = 0;
    this.window = [];
  }

  snapshot(): { frames: number; exact: number; earlier: number; missing: number; exactShare: number | null; p50: number | null; p95: number | null } {
    const matched = this.exact + this.earlier;
    return {
      frames: this.frames,
      exact: this.exact,
      earlier: this.earlier,
      missing: this.missing,
      exactShare: matched > 0 ? this.exact / matched : null,
      p50: this.percentile(50) ?? null,
      p95: this.percentile(95) ?? null,
    };
  }
}

/**
 * Holds video back just enough for boxes to arrive before their frame is shown.
 *
 * Samples are margins: display time of a frame minus arrival time of the event stamped for it
 * (negative = the boxes came too late for their frame). Every `periodMs` the controller looks at
 * a low percentile of the period's margins and moves the receiver's jitter-buffer target so that
 * it sits at `safetyMs`: up at once when events are late, down slowly when there is slack, so a
 * transient AI hiccup does not add latency for good. Samples in the first `warmupMs` after the
 * track starts are ignored (start-up is always late).
 */
export class HoldBack {
  targetMs: number;
  lateEvents = 0;
  samples = 0;
  lastLowMs: number | null = null;
  private window: number[] = [];
  private lastUpdate = 0;
  private startedAt = 0;

  constructor(
    readonly floorMs = 0,
    readonly capMs = 1000,
    readonly safetyMs = 15,
    readonly periodMs = 2000,
    readonly warmupMs = 3000,
    readonly maxStepDownMs = 20,
  ) {
    this.targetMs = floorMs;
  }

  start(now: number): void {
    this.startedAt = now;
    this.lastUpdate = now;
    this.window = [];
  }

  /** One margin sample (ms): frame display time − event arrival time. */
  sample(marginMs: number, now: number): void {
    if (now - this.startedAt < this.warmupMs) return;
    this.samples++;
    if (marginMs < 0) this.lateEvents++;
    this.window.push(marginMs);
  }

  /** Called now and then; returns the (possibly new) target. */
  update(now: number): number {
    if (now - this.lastUpdate < this.periodMs || this.window.length < 5) return this.targetMs;
    const sorted = [...this.window].sort((a, b) => a - b);
    const low = sorted[Math.floor(sorted.length * 0.05)]!;
    this.lastLowMs = low;
    this.window = [];
    this.lastUpdate = now;
    const error = low - this.safetyMs; // < 0: too little margin
    const step = error < 0 ? -error : -Math.min(this.maxStepDownMs, error / 2);
    this.targetMs = Math.min(this.capMs, Math.max(this.floorMs, this.targetMs + step));
    return this.targetMs;
  }
}

/** Compare Redis Stream ids ("<ms>-<seq>"). */
export function compareStreamIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  const d = Number(am) - Number(bm);
  return d !== 0 ? Math.sign(d) : Math.sign(Number(as) - Number(bs));
}
