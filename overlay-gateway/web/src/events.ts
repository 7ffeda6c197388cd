// Generated from docs/events.schema.json by gen-types.mjs: do not edit, run `npm run gen-types`.

/** One detection: a tracked object with a label, a confidence and a normalised box. */
export interface DetectedObject {
  /** Free-form, at most 4096 bytes as compact JSON. */
  attributes?: Record<string, JsonValue> | null;
  /** [x, y, w, h] normalised to 0..1 of the frame; inside the frame, w and h > 0. */
  box: [number, number, number, number];
  /** Track id, stable across frames for the same object. */
  id: string;
  /** Class label, e.g. 'person'. */
  label: string;
  /** Confidence, 0..1. */
  score: number;
}

export type JsonValue = unknown;

/** What one AI worker detected on one frame of one camera (contract version 1). */
export interface CamfleetEvent {
  /** Free-form, at most 4096 bytes as compact JSON. */
  attributes?: Record<string, JsonValue> | null;
  /** '<namespace>/<name>' of the Camera resource. */
  camera: string;
  /** LiveKit frame_id of the frame the boxes belong to. */
  frame?: number | null;
  objects?: DetectedObject[];
  /** Model or worker id that produced the event. */
  source: string;
  /** Capture time of the frame, ms since the epoch (LiveKit user_timestamp/1000). */
  ts: number;
  /** Contract version. */
  v?: 1;
}
