"""Guided tours: for each roster family, a few steps of idea → live figure → question.

Presenter view with ?present=1 (ui/presenter.py): no sidebar, large type in prose and charts, one step per
1280×720 screen, ← / → move between steps. The tour and step live in the URL.
"""
import streamlit as st

from explorer.catalog import load_catalog

from explorer.tours import load_tours
from explorer.text import escape_markdown
from ui.common import QUOTED_LINK_TEXT, drop_unused_link_params, guard, int_from_link, page_setup, start_from_link
from ui.presenter import PRESENTER_FLAG, arrow_keys, presenter_style
from ui.tour_figures import render_figure

page_setup("Tours", ":material/school:")

tours = load_tours()
families = load_catalog().families_by_id
tour_ids = [t["family"] for t in tours]
by_id = {t["family"]: t for t in tours}

params = st.query_params
drop_unused_link_params(("tour", "step", "present"))


def widgets_from_link() -> dict:
    """The tour, step and view the link names, each checked, as the widgets' values."""
    wanted = params.get("tour")
    tour_id = wanted if wanted in by_id else tour_ids[0]
    if wanted and wanted not in by_id:
        named = escape_markdown(wanted, limit=QUOTED_LINK_TEXT)
        examples = escape_markdown(", ".join(tour_ids[:4]))
        st.warning(f"The link asks for a tour named '{named}', which does not exist (tours are named by family id, "
                   f"e.g. {examples}; all are in the menu below): showing {by_id[tour_ids[0]]['title']}.")
    steps_in_tour = len(by_id[tour_id]["steps"])
    step = int_from_link("step", 1, 1, steps_in_tour, "step (of this tour)") - 1
    present_text = params.get("present", "0")
    if present_text not in ("0", "1"):
        named = escape_markdown(present_text, limit=QUOTED_LINK_TEXT)
        st.warning(f"The link's present='{named}' is neither 1 (presenter view) nor 0: showing the normal view.")
    return {"tour_id": tour_id, "tour_step": step, "tour_present": present_text == "1"}


start_from_link("tour_id", widgets_from_link)  # first visit: the tour, step and view the link names


def on_tour_change():
    st.session_state.tour_step = 0


def move(by: int):
    """Previous / Next (and ← / → in presenter mode): one step, within the tour."""
    st.session_state.tour_step = st.session_state.tour_step + by


present = st.session_state.tour_present
st.session_state[PRESENTER_FLAG] = present  # the figures below read it (ui.presenter.show_chart)
if present:
    presenter_style()
    # One row of controls at the top, so the step below fits a 1280×720 screen.
    c1, b1, b2, c2 = st.columns([5, 1.2, 1.2, 1.6], vertical_alignment="center")
else:
    st.title("Tours")
    # the toggle's label stays whole down to an 800-pixel window
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
c1.selectbox("Tour", tour_ids, key="tour_id", on_change=on_tour_change,
             format_func=lambda i: by_id[i]["title"], label_visibility="collapsed" if present else "visible")
c2.toggle("Presenter view", key="tour_present")

tour = by_id[st.session_state.tour_id]
steps = tour["steps"]
st.session_state.tour_step = min(max(st.session_state.tour_step, 0), len(steps) - 1)
index = st.session_state.tour_step
step = steps[index]
st.query_params.from_dict({"tour": tour["family"], "step": str(index + 1), **({"present": "1"} if present else {})})

family = families.get(tour["family"])
about = f"Step {index + 1} of {len(steps)}" + (
    f" · {family.name}, {family.year} · [paper]({family.paper['url']})" if family else "")


def step_prose():
    st.subheader(step["title"])
    st.markdown(step["text"])
    st.info(f"**Think about it:** {step['question']}", icon=":material/lightbulb:")


def step_figure():
    with guard("This step's figure"):
        render_figure(step["figure"])


if present:
    b1.button("← Previous", disabled=index == 0, key="tour_prev", on_click=move, args=(-1,), width="stretch")
    b2.button("Next →", disabled=index == len(steps) - 1, key="tour_next", on_click=move, args=(1,), width="stretch")
    st.caption(about + " · ← / → keys move between steps")  # the tour's title is the menu's, above
    if step["figure"].get("kind") == "text":
        step_prose()
    else:  # prose beside its figure: one screen, no scrolling
        left, right = st.columns([5.3, 6.7], gap="medium")
        with left:
            step_prose()
        with right:
            step_figure()
    arrow_keys("tour_prev", "tour_next")
else:
    st.header(tour["title"])
    st.caption(about)
    st.subheader(step["title"])
    st.markdown(step["text"])
    step_figure()
    st.info(f"**Think about it:** {step['question']}", icon=":material/lightbulb:")
    b1, b2, _ = st.columns([1, 1, 2])  # "← Previous" stays whole in an 800-pixel window
    b1.button("← Previous", disabled=index == 0, key="tour_prev", on_click=move, args=(-1,))
    b2.button("Next →", disabled=index == len(steps) - 1, key="tour_next", on_click=move, args=(1,))
