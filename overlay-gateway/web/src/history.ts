// Per camera: the AI path's health on the tile ("AI stalled 2 min"), a timeline strip of the
// last hour (stacked counts per bucket, by label), and the recent detections; a click on one
// shows its time and its boxes. Data from the gateway's history API (docs/gateway.md).

import { ApiError, recentEvents, recordings, timeline, type OverlayHealth, type Recordings, type StoredEvent } from './api';

const RANGE_MS = 3600_000;
const ROLLUP_MS = 10_000;
const REFRESH_MS = 15_000;
const RECENT = 8;
const COLOURS = ['#4fc3f7', '#ffb74d', '#81c784', '#e57373', '#ba68c8', '#fff176'];

export function stalledText(health: OverlayHealth | undefined, now: number): string | null {
  if (!health || health.state !== 'stale' || health.staleSince === undefined) return null;
  const seconds = Math.max(0, Math.round((now - health.staleSince) / 1000));
  if (seconds < 120) return `AI stalled ${seconds} s`;
  if (seconds < 7200) return `AI stalled ${Math.round(seconds / 60)} min`;
  return `AI stalled ${Math.round(seconds / 3600)} h`;
}

export class HistoryPanel {
  readonly element: HTMLElement;
  readonly badge: HTMLElement;
  private readonly strip: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly detail: HTMLElement;
  private readonly note: HTMLElement;
  private readonly recorded: HTMLElement;
  private health: OverlayHealth | undefined;
  private colours = new Map<string, string>();
  private timer: number | undefined;
  private from = 0;
  /** Playback's hook: a click on the strip or on a detection plays the recording from there. */
  onPick: ((ms: number) => void) | null = null;

  constructor(readonly camera: string) {
    const el = document.createElement('section');
    el.className = 'history';
    el.setAttribute('aria-label', `Detections of ${camera}`);
    el.innerHTML = `
      <div class="timeline" role="img"></div>
      <div class="recorded" aria-label="Recorded ranges"></div>
      <p class="history-note"></p>
      <ol class="detections"></ol>
      <div class="detection-detail" hidden>
        <time></time>
        <svg viewBox="0 0 160 90" aria-label="Boxes of the selected detection"></svg>
      </div>`;
    // Clicks here are about history, not about enlarging the tile.
    el.addEventListener('click', (ev) => ev.stopPropagation());
    el.addEventListener('keydown', (ev) => ev.stopPropagation());
    this.element = el;
    this.strip = el.querySelector('.timeline')!;
    this.list = el.querySelector('.detections')!;
    this.detail = el.querySelector('.detection-detail')!;
    this.note = el.querySelector('.history-note')!;
    this.recorded = el.querySelector('.recorded')!;
    for (const bar of [this.strip, this.recorded]) {
      bar.addEventListener('click', (ev) => {
        const box = bar.getBoundingClientRect();
        if (box.width <= 0 || !this.onPick) return;
        this.onPick(Math.round(this.from + ((ev.clientX - box.left) / box.width) * RANGE_MS));
      });
    }
    this.badge = document.createElement('span');
    this.badge.className = 'badge ai';
    this.badge.title = 'AI overlays';
    this.badge.hidden = true;
  }

  start(): void {
    void this.refresh();
    window.setInterval(() => this.showHealth(), 1000);
  }

  setHealth(health: OverlayHealth | undefined): void {
    this.health = health;
    this.showHealth();
  }

  private showHealth(): void {
    const text = stalledText(this.health, Date.now());
    this.badge.hidden = text === null;
    this.badge.dataset.state = this.health?.state ?? 'unknown';
    this.badge.textContent = text ?? '';
  }

  private colour(label: string): string {
    let c = this.colours.get(label);
    if (!c) {
      c = COLOURS[this.colours.size % COLOURS.length] ?? '#fff';
      this.colours.set(label, c);
    }
    return c;
  }

  async refresh(): Promise<void> {
    window.clearTimeout(this.timer);
    const to = Date.now();
    // From a whole 10 s: the gateway then answers from the archiver's rollup (docs/history.md).
    const from = Math.floor((to - RANGE_MS) / ROLLUP_MS) * ROLLUP_MS;
    try {
      const [line, recent] = await Promise.all([
        timeline(this.camera, from, to),
        recentEvents(this.camera, from, RECENT),
      ]);
      this.note.textContent = '';
      this.from = from;
      this.drawStrip(line.buckets, from, line.bucketSeconds * 1000);
      this.drawList(recent);
      // Recorded ranges and gaps (503/404 when the gateway has no recording store: none shown).
      await recordings(this.camera, from, to).then(
        (rec) => this.drawRecorded(rec, from),
        () => this.recorded.replaceChildren(),
      );
    } catch (err) {
      this.note.textContent =
        err instanceof ApiError && err.status === 503 ? `History: ${err.message}` : 'History unavailable';
    }
    this.timer = window.setTimeout(() => void this.refresh(), REFRESH_MS);
  }

  private drawStrip(buckets: { start: number; counts: Record<string, number> }[], from: number, width: number): void {
    const slots = Math.round(RANGE_MS / width);
    const max = Math.max(1, ...buckets.map((b) => Object.values(b.counts).reduce((a, n) => a + n, 0)));
    this.strip.replaceChildren();
    const totals: Record<string, number> = {};
    for (const b of buckets) {
      const bar = document.createElement('div');
      bar.className = 'bucket';
      bar.style.left = `${((b.start - from) / width / slots) * 100}%`;
      bar.style.width = `${100 / slots}%`;
      const parts = Object.entries(b.counts).sort();
      bar.dataset.counts = parts.map(([l, n]) => `${l}:${n}`).join(',');
      bar.title = `${new Date(b.start).toLocaleTimeString()}: ${parts.map(([l, n]) => `${n} ${l}`).join(', ')}`;
      for (const [label, n] of parts) {
        totals[label] = (totals[label] ?? 0) + n;
        const seg = document.createElement('span');
        seg.style.height = `${(n / max) * 100}%`;
        seg.style.background = this.colour(label);
        bar.append(seg);
      }
      this.strip.append(bar);
    }
    const summary = Object.entries(totals).sort().map(([l, n]) => `${n} ${l}`).join(', ');
    this.strip.setAttribute('aria-label', `Last hour: ${summary || 'no detections'}`);
    this.strip.dataset.totals = Object.entries(totals).sort().map(([l, n]) => `${l}:${n}`).join(',');
  }

  private drawRecorded(rec: Recordings, from: number): void {
    this.recorded.replaceChildren();
    const place = (el: HTMLElement, start: number, end: number): void => {
      el.style.left = `${Math.max(0, (start / 1000 - from) / RANGE_MS) * 100}%`;
      el.style.width = `${Math.max(0.1, ((end - start) / 1000 / RANGE_MS) * 100)}%`;
      el.dataset.start = String(start);
      el.dataset.end = String(end);
    };
    // Consecutive segments join into one range.
    const ranges: [number, number][] = [];
    for (const s of rec.segments) {
      const last = ranges[ranges.length - 1];
      if (last && s.start <= last[1] + 100_000) last[1] = Math.max(last[1], s.end);
      else ranges.push([s.start, s.end]);
    }
    for (const [start, end] of ranges) {
      const el = document.createElement('span');
      el.className = 'range';
      el.title = `Recorded ${new Date(start / 1000).toLocaleTimeString()}–${new Date(end / 1000).toLocaleTimeString()}`;
      place(el, start, end);
      this.recorded.append(el);
    }
    for (const g of rec.gaps) {
      const el = document.createElement('span');
      el.className = 'gap';
      el.title = `Not recorded (${g.reason})`;
      place(el, g.start, g.end);
      this.recorded.append(el);
    }
  }

  private drawList(events: StoredEvent[]): void {
    this.list.replaceChildren();
    for (const ev of events) {
      const item = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.id = ev.id;
      const labels = [...new Set(ev.objects.map((o) => o.label))].join(', ') || '(nothing)';
      button.textContent = `${new Date(ev.ts).toLocaleTimeString()} ${labels}`;
      button.addEventListener('click', () => {
        this.show(ev);
        this.onPick?.(ev.ts);
      });
      item.append(button);
      this.list.append(item);
    }
  }

  show(ev: StoredEvent): void {
    this.detail.hidden = false;
    const time = this.detail.querySelector('time')!;
    time.dateTime = new Date(ev.ts).toISOString();
    time.textContent = `${new Date(ev.ts).toISOString()} · ${ev.source}`;
    const svg = this.detail.querySelector('svg')!;
    svg.replaceChildren();
    const ns = 'http://www.w3.org/2000/svg';
    for (const o of ev.objects) {
      const [x, y, w, h] = o.box;
      const rect = document.createElementNS(ns, 'rect');
      rect.setAttribute('x', String(x * 160));
      rect.setAttribute('y', String(y * 90));
      rect.setAttribute('width', String(w * 160));
      rect.setAttribute('height', String(h * 90));
      rect.setAttribute('fill', 'none');
      rect.setAttribute('stroke', this.colour(o.label));
      rect.dataset.label = o.label;
      const title = document.createElementNS(ns, 'title');
      title.textContent = `${o.label} ${Math.round(o.score * 100)}%`;
      rect.append(title);
      svg.append(rect);
    }
  }
}
