// Test hook (loaded only with ?testhooks): when does a tile play the beep, and when does it
// show the frame the beep belongs to? For the A/V sync test and docs/benchmarks.md.
//
// Audio: the tile's audio track through WebAudio (a ScriptProcessorNode of 256 samples); the
// onset is the first loud sample after a quiet stretch, placed on the performance clock with
// `AudioContext.getOutputTimestamp()`. Video: each displayed frame's frame code with its
// `expectedDisplayTime` from requestVideoFrameCallback. Their difference is the offset a
// viewer perceives, up to the audio output latency (the same for every tile) and one
// processing buffer (5 ms).

import type { CameraView } from './camera';

const BUFFER = 256;
const LOUD = 0.1; // the beep is at half scale; silence decodes to ~0
const QUIET_MS = 300;

export class AvProbe {
  readonly onsets: number[] = [];
  readonly frames: { t: number; code: number }[] = [];
  private ctx: AudioContext | null = null;
  private lastLoud = -Infinity;
  private running = false;

  constructor(
    private readonly view: CameraView,
    private readonly readCode: () => number | null,
  ) {}

  start(): string {
    const stream = this.view.sound.audio.srcObject;
    if (!(stream instanceof MediaStream)) return 'no audio track on the tile';
    const ctx = new AudioContext();
    this.ctx = ctx;
    const source = ctx.createMediaStreamSource(stream);
    const node = ctx.createScriptProcessor(BUFFER, 1, 1);
    node.onaudioprocess = (ev) => {
      const data = ev.inputBuffer.getChannelData(0);
      // The input of this callback is the graph's previous quantum: one buffer before playbackTime.
      const base = ev.playbackTime - BUFFER / ctx.sampleRate;
      for (let i = 0; i < data.length; i++) {
        if (Math.abs(data[i]!) <= LOUD) continue;
        const at = base + i / ctx.sampleRate;
        if ((at - this.lastLoud) * 1000 > QUIET_MS) {
          const ts = ctx.getOutputTimestamp();
          this.onsets.push((ts.performanceTime ?? 0) + (at - (ts.contextTime ?? 0)) * 1000);
        }
        this.lastLoud = at;
      }
      ev.outputBuffer.getChannelData(0).fill(0);
    };
    source.connect(node);
    node.connect(ctx.destination);
    void ctx.resume();
    this.running = true;
    const video = this.view.video;
    const onFrame = (_now: number, md: VideoFrameCallbackMetadata): void => {
      if (!this.running) return;
      const code = this.readCode();
      if (code !== null) this.frames.push({ t: md.expectedDisplayTime, code });
      if (this.frames.length > 3000) this.frames.splice(0, 1000);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    return 'started';
  }

  stop(): void {
    this.running = false;
    void this.ctx?.close();
  }
}
