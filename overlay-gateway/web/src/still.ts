// The camera's still on its tile: shown until the video's first frame, and again whenever the
// video stops (an on-demand camera nobody watches, a camera that is down), with its age.
//
// The gateway serves the latest keyframe as a JPEG (docs/gateway.md#snapshots); the tile asks
// for it when it appears and every REFRESH_MS after, which also keeps the gateway's last known
// still of an on-demand camera recent while its video plays.

import { snapshot } from './api';

const REFRESH_MS = 30000;

function ageText(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} min ago`;
  const h = Math.round(m / 60);
  return h < 48 ? `${h} h ago` : `${Math.round(h / 24)} d ago`;
}

export class StillView {
  readonly img: HTMLImageElement;
  readonly ageEl: HTMLElement;
  /** Capture time of the still shown, ms since the epoch (null: none yet). */
  takenAt: number | null = null;
  live = false;
  loads = 0;
  visible = true;
  /** performance.now() when a still was first on screen (tests compare it with the video). */
  firstShownAt: number | null = null;
  private url: string | null = null;
  private timers: number[] = [];

  constructor(
    private readonly camera: string,
    stage: HTMLElement,
  ) {
    this.img = document.createElement('img');
    this.img.className = 'still';
    this.img.alt = `Latest still of ${camera}`;
    this.img.hidden = true;
    this.ageEl = document.createElement('span');
    this.ageEl.className = 'still-age';
    this.ageEl.hidden = true;
    stage.prepend(this.img);
    stage.append(this.ageEl);
  }

  start(): void {
    void this.load();
    this.timers.push(window.setInterval(() => void this.load(), REFRESH_MS));
    this.timers.push(window.setInterval(() => this.render(), 1000));
  }

  stop(): void {
    for (const t of this.timers) window.clearInterval(t);
    if (this.url) URL.revokeObjectURL(this.url);
  }

  /** Video frames are showing (false) or not (true). */
  show(visible: boolean): void {
    this.visible = visible;
    this.render();
  }

  private async load(): Promise<void> {
    try {
      const still = await snapshot(this.camera);
      if (!still) return;
      const url = URL.createObjectURL(still.blob);
      if (this.url) URL.revokeObjectURL(this.url);
      this.url = url;
      this.img.src = url;
      this.takenAt = still.takenAt;
      this.live = still.live;
      this.loads++;
      this.render();
    } catch {
      // no still is no error: the tile shows the video or its black stage
    }
  }

  private render(): void {
    const has = this.takenAt !== null;
    this.img.hidden = !(this.visible && has);
    this.ageEl.hidden = !(this.visible && has);
    if (!this.img.hidden && this.firstShownAt === null) this.firstShownAt = performance.now();
    if (this.takenAt !== null) {
      this.ageEl.textContent = `Still · ${ageText(Date.now() - this.takenAt)}`;
    }
  }
}
