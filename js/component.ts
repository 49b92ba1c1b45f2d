/** What every component of the widget looks like. */

import type { CommandClient } from "./commands";
import type { Snapshot } from "./protocol";

export interface Component {
  readonly el: HTMLElement;
  /** Draw `snapshot` (null before the first one). */
  update(snapshot: Snapshot | null): void;
  /** Remove timers, listeners and plots. The element is detached by the caller. */
  destroy(): void;
}

export interface ViewContext {
  commands: CommandClient;
  /** Aborted when the view is cleaned up: pass it to every addEventListener. */
  signal: AbortSignal;
}
