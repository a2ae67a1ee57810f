//! The PNG backend: plotters' bitmap backend with text drawn where the font puts each glyph.
//!
//! plotters' `ab_glyph` text drawing places every glyph's coverage bitmap at the pen position and
//! drops the glyph's own offset from it (`px_bounds().min.x`: its left side bearing). Glyphs
//! with a wide bearing then sit too far left and the gaps look like broken kerning
//! ("Throughpu t"). This backend draws the same text, at the same layout box and anchor, with
//! each glyph at pen position + bearing. SVG text is laid out by the viewer and needs no fix.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, ScaleFont, point};
use plotters::backend::BitMapBackend;
use plotters::prelude::DrawingBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

type Failed = DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

/// The one font every figure uses (`plots` registers the same bytes with plotters for layout).
fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(dejavu::sans::regular()).expect("the bundled DejaVu Sans parses")
    })
}

pub struct Png<'a>(pub BitMapBackend<'a>);

impl DrawingBackend for Png<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), Failed> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), Failed> {
        self.0.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), Failed> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), Failed> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), Failed> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), Failed> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), Failed> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), Failed> {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), Failed> {
        self.0.blit_bitmap(pos, size, src)
    }

    /// As plotters' default (layout box, anchor, rotation, clipping), with the glyphs placed by
    /// the font: pen position (advances and kerning) plus each glyph's bearing.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), Failed> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let turn = style.transform();
        let (w, h) = self.get_size();
        let size = style.size() as f32;
        let scaled = font().as_scaled(size);
        let mut pen = 0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                pen += scaled.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scaled.scale(), point(pen, 0.0));
            pen += scaled.h_advance(id);
            let Some(outline) = scaled.outline_glyph(glyph) else {
                continue; // a space
            };
            let b = outline.px_bounds();
            // plotters puts the baseline half a line height below the top of the layout box.
            let (gx, gy) = (b.min.x as i32, (size / 2.0 + b.min.y) as i32);
            let mut inked = Vec::new();
            outline.draw(|x, y, coverage| inked.push((x as i32, y as i32, coverage)));
            for (x, y, coverage) in inked {
                let (x, y) = turn.transform(gx + x + dx - min_x, gy + y + dy - min_y);
                let (x, y) = (pos.0 + x, pos.1 + y);
                if x >= 0 && x < w as i32 && y >= 0 && y < h as i32 {
                    let ink = BackendColor {
                        alpha: color.alpha * coverage as f64,
                        rgb: color.rgb,
                    };
                    self.0.draw_pixel((x, y), ink)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    const SIZE: f64 = 36.0; // an axis label's line height in the figures
    const ORIGIN: i32 = 10;

    /// Runs of inked columns of `text` drawn at `SIZE` from x = `ORIGIN`, by this backend or
    /// by plotters' own.
    fn ink_runs(text: &str, ours: bool) -> Vec<(i32, i32)> {
        crate::plots::register_fonts();
        let (w, h) = (300u32, 60u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let bitmap = BitMapBackend::with_buffer(&mut buf, (w, h));
            let text = Text::new(
                text,
                (ORIGIN, 5),
                ("sans-serif", SIZE).into_font().color(&BLACK),
            );
            if ours {
                let root = Png(bitmap).into_drawing_area();
                root.draw(&text).unwrap();
                root.present().unwrap();
            } else {
                let root = bitmap.into_drawing_area();
                root.draw(&text).unwrap();
                root.present().unwrap();
            }
        }
        let inked = |x: u32| (0..h).any(|y| buf[((y * w + x) * 3) as usize] < 128);
        let mut runs: Vec<(i32, i32)> = Vec::new();
        for x in 0..w {
            if inked(x) {
                match runs.last_mut() {
                    Some(r) if r.1 == x as i32 - 1 => r.1 = x as i32,
                    _ => runs.push((x as i32, x as i32)),
                }
            }
        }
        runs
    }

    /// Where the font puts each glyph's ink: its outline bounds at its pen position.
    fn font_runs(text: &str) -> Vec<(f32, f32)> {
        let scaled = font().as_scaled(SIZE as f32);
        let mut pen = 0.0;
        text.chars()
            .map(|c| {
                let id = scaled.glyph_id(c);
                let g = id.with_scale_and_position(scaled.scale(), point(pen, 0.0));
                pen += scaled.h_advance(id);
                let b = scaled.outline_glyph(g).unwrap().px_bounds();
                (b.min.x + ORIGIN as f32, b.max.x + ORIGIN as f32)
            })
            .collect()
    }

    #[test]
    fn glyphs_sit_where_the_font_puts_them() {
        // Parentheses have a wide left bearing: plotters drew `(` about 3 px too far left,
        // so "t (r" read as "t(  r".
        let text = "l(l)l";
        let want = font_runs(text);
        let off = |runs: &[(i32, i32)]| {
            runs.iter()
                .zip(&want)
                .map(|(r, w)| (r.0 as f32 - w.0).abs())
                .fold(0.0, f32::max)
        };
        let ours = ink_runs(text, true);
        assert_eq!(ours.len(), want.len(), "{ours:?}");
        assert!(off(&ours) <= 1.0, "{ours:?} against {want:?}");
        let theirs = ink_runs(text, false);
        assert!(off(&theirs) >= 2.0, "{theirs:?} against {want:?}");
    }
}
