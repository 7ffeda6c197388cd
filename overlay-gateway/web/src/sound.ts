// The camera's audio on its tile: a mute/unmute button, muted by default (browsers let a page
// play sound only after a user gesture, and a grid of cameras must not all speak at once).

import type { RemoteAudioTrack } from 'livekit-client';

export class SoundControl {
  readonly button: HTMLButtonElement;
  readonly audio: HTMLAudioElement;
  track: RemoteAudioTrack | null = null;
  muted = true;

  constructor(camera: string, header: HTMLElement) {
    this.audio = document.createElement('audio');
    this.audio.muted = true;
    this.audio.autoplay = true;
    this.button = document.createElement('button');
    this.button.type = 'button';
    this.button.className = 'sound';
    this.button.hidden = true;
    this.button.setAttribute('aria-label', `Sound of ${camera}`);
    this.button.addEventListener('click', (ev) => {
      ev.stopPropagation(); // a click on the tile enlarges it; this one only (un)mutes
      this.setMuted(!this.muted);
    });
    this.button.addEventListener('keydown', (ev) => ev.stopPropagation());
    header.append(this.button, this.audio);
    this.render();
  }

  attach(track: RemoteAudioTrack): void {
    this.detach();
    this.track = track;
    passEncodedFramesThrough(track);
    track.attach(this.audio);
    this.audio.muted = this.muted;
    this.button.hidden = false;
  }

  detach(track?: RemoteAudioTrack): void {
    if (!this.track || (track && track !== this.track)) return;
    this.track.detach(this.audio);
    this.track = null;
    this.button.hidden = true;
  }

  setMuted(muted: boolean): void {
    this.muted = muted;
    this.audio.muted = muted;
    if (!muted) void this.audio.play().catch(() => undefined);
    this.render();
  }

  private render(): void {
    this.button.textContent = this.muted ? 'Unmute' : 'Mute';
    this.button.setAttribute('aria-pressed', String(!this.muted));
  }
}

/**
 * Let the audio's encoded frames reach the decoder.
 *
 * The room's frame-metadata worker (camera.ts) makes livekit-client open its peer connection with
 * `encodedInsertableStreams` in Chromium, where every receiver's frames then wait for a reader of
 * its encoded streams; livekit-client sets one up for video tracks only (2.23.0), so without this
 * Chromium receives the audio packets but never decodes or plays a sample
 * (`totalSamplesReceived` stays 0). Elsewhere (no `createEncodedStreams`) there is nothing to do.
 */
function passEncodedFramesThrough(track: RemoteAudioTrack): void {
  const receiver = track.receiver as
    | (RTCRtpReceiver & {
        createEncodedStreams?: () => { readable: ReadableStream; writable: WritableStream };
        camfleetPassthrough?: boolean;
      })
    | undefined;
  if (!receiver?.createEncodedStreams || receiver.camfleetPassthrough) return;
  try {
    const { readable, writable } = receiver.createEncodedStreams();
    receiver.camfleetPassthrough = true;
    void readable.pipeTo(writable).catch(() => undefined);
  } catch {
    // Not opened with insertable streams, or already taken: the frames flow without us.
  }
}
