/**
 * Page views for zmp-ui (react-router v6 under `ZMPRouter`). No import of React or the router:
 * the app passes its own `useLocation` and `useEffect`, so this entry adds nothing to the core
 * and works with whichever versions the app has.
 *
 * ```tsx
 * import { useEffect } from "react";
 * import { useLocation } from "react-router-dom";
 * import { createPageViewHook } from "zcdp-zmp/react";
 * const usePageViews = createPageViewHook(tracker, { useLocation, useEffect });
 * function PageViews() { usePageViews(); return null; }   // inside <ZMPRouter>
 * ```
 */

/** What the helper needs of the tracker. */
export interface PageTracker {
  page(screen: string, properties?: { page_title?: string }): string;
}

/** The part of react-router's location used. */
export interface LocationLike {
  pathname: string;
  search?: string;
}

export interface PageViewOptions {
  /** The screen name of a location (default its pathname: the query string may hold personal
   * data and is left out). */
  screen?: (location: LocationLike) => string;
  /** The page title to send (default none). */
  title?: (location: LocationLike) => string | undefined;
}

/** A function to call with each location: one `page()` per change of screen (a repeat of the
 * same screen, as React's strict mode or a re-render gives, is not a new view). */
export function pageViews(tracker: PageTracker, options: PageViewOptions = {}): (location: LocationLike) => string | undefined {
  let last: string | undefined;
  return (location) => {
    const screen = options.screen ? options.screen(location) : location.pathname;
    if (!screen || screen === last) return;
    last = screen;
    const title = options.title?.(location);
    return tracker.page(screen, title ? { page_title: title } : undefined);
  };
}

/** A React hook, made from the app's own `useLocation` and `useEffect`, that sends a page view
 * on each route change. Call it in one component inside the router. */
export function createPageViewHook(
  tracker: PageTracker,
  hooks: { useLocation: () => LocationLike; useEffect: (effect: () => void, deps: unknown[]) => void },
  options: PageViewOptions = {},
): () => void {
  const onLocation = pageViews(tracker, options);
  return () => {
    const location = hooks.useLocation();
    hooks.useEffect(() => {
      onLocation(location);
    }, [location.pathname, location.search]);
  };
}
